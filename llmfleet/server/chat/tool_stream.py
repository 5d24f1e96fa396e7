"""Streaming one choice's answer when it may call tools: content deltas, then tool-call deltas in OpenAI's shape.

Content is sent up to where calls may begin (a marker, or the start of a marker cut between tokens), holding back
trailing whitespace, which the whole answer strips before calls. Each call is sent once complete: a delta with its
index, id, type and name (arguments ""), then one with its arguments text. At the end, calls that only the final
parse sees are sent, or, when there were none, the held-back text as content; so the concatenated stream equals
the whole answer (tools.extract).
"""
from __future__ import annotations

from llmfleet.protocol.openai.chat import DeltaFunctionCall, DeltaMessage, DeltaToolCall
from llmfleet.server.chat.tool_parsers import ParsedCall
from llmfleet.server.chat.tools import new_call_id


class ToolStream:
    def __init__(self, reader):
        self.reader = reader
        self.text = ""
        self.sent = 0          # characters of content sent
        self.num_calls = 0     # calls sent

    @property
    def called(self) -> bool:
        return self.num_calls > 0

    def feed(self, delta: str) -> list[DeltaMessage]:
        """The deltas that `delta` (new text) makes certain."""
        self.text += delta
        start = self.reader.start(self.text)
        head = self.text[:start]
        end = len(head.rstrip()) if self.reader.may_call else len(head)
        out = []
        if end > self.sent:
            out.append(DeltaMessage(content=self.text[self.sent:end]))
            self.sent = end
        if start < len(self.text):
            out += self._calls(self.reader.calls(self.text[start:], final=False))
        return out

    def finish(self) -> list[DeltaMessage]:
        """What is left once the answer is complete."""
        start = self.reader.start(self.text)
        calls = self.reader.calls(self.text[start:], final=True) if start < len(self.text) else []
        if calls:
            return self._calls(calls)
        if self.num_calls == 0 and self.sent < len(self.text):
            rest, self.sent = self.text[self.sent:], len(self.text)
            return [DeltaMessage(content=rest)]
        return []

    def _calls(self, calls: list[ParsedCall]) -> list[DeltaMessage]:
        out = []
        for index in range(self.num_calls, len(calls)):
            name, arguments = calls[index]
            out.append(DeltaMessage(tool_calls=[DeltaToolCall(
                index=index, id=new_call_id(), type="function", function=DeltaFunctionCall(name=name, arguments=""))]))
            out.append(DeltaMessage(tool_calls=[DeltaToolCall(index=index,
                                                              function=DeltaFunctionCall(arguments=arguments))]))
        self.num_calls = max(self.num_calls, len(calls))
        return out
