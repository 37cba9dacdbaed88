"""The tutorial's "tick": an executable file, provided as a program."""

from batou.component import Attribute, Component
from batou.lib.file import File


class Tick(Component):
    # benches/batou/tutorial.sh rewrites this line for a new priority.
    priority = Attribute(int, 10)

    def configure(self):
        tick = File("tick.sh", source="tick.sh", mode=0o755)
        self += tick
        self.provide(
            "programs", dict(name="tick", path=tick.path, priority=self.priority)
        )
