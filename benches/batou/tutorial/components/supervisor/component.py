"""supervisord from a templated buildout, (re)started when it is older
than the buildout or the programs it runs, as the tutorial's last step
describes. The versions are those tack's examples/tutorial-component
installs, so both tools run the same buildout."""

from batou.component import Attribute, Component
from batou.lib.buildout import Buildout
from batou.lib.python import Package, VirtualEnv


class Supervisor(Component):
    port = Attribute(int, 9001)

    def configure(self):
        self.programs = self.require("programs", self.host)
        buildout = Buildout(
            python="3.11",
            version="6.0.1",
            setuptools="80.9.0",
            wheel="0.48.0",
            pip="26.3",
        )
        self += buildout
        # batou installs zc.buildout with --no-deps; buildout 6 needs these.
        venv = next(c for c in buildout.sub_components if isinstance(c, VirtualEnv))
        venv += Package("packaging", version="26.4")
        venv += Package("platformdirs", version="4.14.8")

    def verify(self):
        self.assert_file_is_current(
            "var/supervisord.pid",
            [".batou.buildout.success"] + [p["path"] for p in self.programs],
        )

    def update(self):
        out, _ = self.cmd("bin/supervisorctl pid", ignore_returncode=True)
        if out.strip().isdigit():
            self.cmd("bin/supervisorctl reload")
        else:
            self.cmd("bin/supervisord")
