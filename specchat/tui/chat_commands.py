"""The chat commands (/spec, /k, /theme, ...) as the app carries them out; parsing is commands.py.
A mixin of SpecChatApp: the methods read and set the app's session and settings."""

from __future__ import annotations

from pathlib import Path

from . import commands
from .themes import resolve_theme_arg
from .transcript import SystemPrompt


class CommandsMixin:
    def run_command(self, command: commands.Command) -> None:
        name, arg = command.name, command.arg
        if name == "help":
            self.notify("\n".join(commands.HELP.values()), title="commands", timeout=15)
            return
        if name == "export":
            self.export_markdown(Path(arg).expanduser() if arg else None)
            return
        if name == "trace":
            self.export_trace(Path(arg).expanduser() if arg else None)
            return
        if name == "theme":
            self.set_theme(arg)
            return
        if self.session is None:  # the rest need the engine
            why = "the models did not load" if self.load_error else "models are still loading"
            self.notify(f"/{name}: {why}", severity="warning")
            return
        if self.generating:
            self.notify(f"/{name} waits until the answer ends (Esc stops it)", severity="warning")
            return
        if name == "clear":
            self.session.clear()
            self._new_conversation()
        elif name == "system":
            text = arg or None
            self.session.set_system_prompt(text)
            self._fold(SystemPrompt(text))
            self.notify("system prompt " + ("set" if text else "cleared"))
        elif name == "spec":
            self.set_speculation(arg.lower() != "off" if arg else not self.info.speculation)
        elif name == "k":
            self.session.settings.k = None if arg.lower() == "auto" else int(arg)
            self.notify(f"k = {arg.lower()}")
        elif name == "alt":
            self.session.settings.alternatives = None if arg.lower() == "auto" else int(arg)
            self.notify(f"alternatives = {arg.lower()}")
        elif name in commands.SETTINGS:  # GenerationSettings shares config's names
            setting = commands.SETTINGS[name][0]
            setattr(self.session.settings, setting, float(arg))
            self.notify(f"{setting.replace('_', ' ')} = {float(arg):g}")

    def set_speculation(self, on: bool) -> None:
        from specchat.engine.drafters.protocol import NoDrafter

        if on:
            if self._spec_drafter is None:
                self.notify("no drafter to turn on (started with --drafter none)", severity="warning")
                return
            self.session.set_drafter(self._spec_drafter)
        else:
            self.session.set_drafter(NoDrafter())
        self.info.speculation = on
        self.info.drafter = (self._spec_drafter.name if self._spec_drafter else "none")
        self._gauges_dirty = True
        self.notify("speculation " + ("on" if on else "off: this turn is the speedup baseline"))

    def set_theme(self, arg: str) -> None:
        name, warning = resolve_theme_arg(arg, self._theme_load)
        if warning:
            self.notify(warning, severity="error")
            return
        if name not in self.available_themes:
            self.register_theme(self._theme_load.themes[name])
        self.theme = name
