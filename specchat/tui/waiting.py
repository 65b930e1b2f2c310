"""The message sent while the models load: shown at once, answered when they are ready.

One message waits at a time. A second one sent before the models are ready stays
in the prompt box (the answer to the first may change what you would ask next);
a load that fails puts the waiting message's text back into the box, so nothing
typed is lost. Esc takes the waiting message back into the box as well.
"""

from __future__ import annotations

from .widgets.chat import ChatView, UserMessage
from .widgets.prompt import PromptInput


class WaitingPrompt:
    def __init__(self, chat: ChatView, prompt: PromptInput) -> None:
        self.chat = chat
        self.prompt = prompt
        self.view: UserMessage | None = None

    @property
    def text(self) -> str | None:
        return self.view.text if self.view is not None else None

    def hold(self, text: str, color: str) -> bool:
        """Show `text` as the waiting message; False (and the text back in the box)
        when one already waits."""
        if self.view is not None:
            self.prompt.restore(text)
            return False
        self.view = UserMessage(text, color, waiting=True)
        self.chat.mount(self.view)
        self.chat.scroll_end(animate=False)
        return True

    def take(self) -> str | None:
        """The waiting message's text, its marker gone from the chat (None: none waits)."""
        if self.view is None:
            return None
        text, view, self.view = self.view.text, self.view, None
        view.remove()
        return text

    def give_back(self) -> str | None:
        """Take the waiting message back into the prompt box (a failed load, Esc)."""
        text = self.take()
        if text is not None:
            self.prompt.restore(text)
        return text
