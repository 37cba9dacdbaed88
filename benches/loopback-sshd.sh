#!/usr/bin/env bash
# Starts an OpenSSH server on 127.0.0.1 as tests/support/sshd.rs does, for
# benchmarks: throwaway host and user keys in DIR, the host aliases alpha,
# beta, gamma and host01..host20 in DIR/ssh_config (use `ssh -F`), and
# every session's XDG_CACHE_HOME in DIR/remote-cache. sshd runs in the
# background; its pid is in DIR/sshd.pid (`kill "$(cat DIR/sshd.pid)"`).
# Usage: benches/loopback-sshd.sh DIR
set -euo pipefail
dir="$1"
mkdir -p "$dir/remote-cache" /run/sshd
dir="$(cd "$dir" && pwd)"
ssh-keygen -q -t ed25519 -N '' -C tack-bench -f "$dir/host_key" <<<y >/dev/null
ssh-keygen -q -t ed25519 -N '' -C tack-bench -f "$dir/user_key" <<<y >/dev/null
cp "$dir/user_key.pub" "$dir/authorized_keys"
# A port nothing listens on: a connection to it is refused.
port=$((20000 + RANDOM % 40000))
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((20000 + RANDOM % 40000)); done
cat > "$dir/sshd_config" <<CONFIG
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd.pid
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
SetEnv XDG_CACHE_HOME=$dir/remote-cache
MaxStartups 100:30:200
LogLevel ERROR
CONFIG
echo "[127.0.0.1]:$port $(cat "$dir/host_key.pub")" > "$dir/known_hosts"
hosts="alpha beta gamma $(seq -f 'host%02g' -s ' ' 1 20)"
cat > "$dir/ssh_config" <<CONFIG
Host $hosts
    HostName 127.0.0.1
    Port $port
    User $(id -un)
    IdentityFile $dir/user_key
    IdentitiesOnly yes
    UserKnownHostsFile $dir/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
CONFIG
# Without -D sshd forks into the background once it listens.
/usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
for _ in $(seq 100); do [ -s "$dir/sshd.pid" ] && break; sleep 0.05; done
