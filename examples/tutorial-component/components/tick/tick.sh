#!/bin/sh
# Prints the time once a second, forever: a stand-in for a real daemon.
while true; do
    date
    sleep 1
done
