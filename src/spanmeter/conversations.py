"""Conversations followed by ``gen_ai.conversation.id``: turns, ends, escalations.

Each agent run that carries a conversation id is one turn of that conversation. A
conversation ends when the application says so (``AgentRun.end_conversation()``,
``spanmeter.end_conversation(id)``), or after ``idle_seconds`` without a turn, or when
more than ``max_open`` conversations are open (the least recently active one is ended
first). Its turns and whether it was escalated to a human are then recorded by agent.
Conversation ids are held in memory only while a conversation is open; they are never
metric labels.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

#: How a conversation ended (the ``reason`` label of ``agent_conversations_ended_total``).
ENDED_BY_APP, ENDED_IDLE, ENDED_EVICTED = "app", "idle", "evicted"


@dataclass
class _Open:
    agent: object
    turns: int
    last: float
    escalated: bool


@dataclass(frozen=True)
class Ended:
    agent: object
    turns: int
    escalated: bool
    reason: str


class ConversationTracker:
    """Open conversations, least recently active first; not thread-safe (callers lock)."""

    def __init__(self, *, idle_seconds: float = 1800.0, max_open: int = 100_000):
        self.idle_seconds = idle_seconds
        self.max_open = max_open
        self._open: OrderedDict[str, _Open] = OrderedDict()  # O(1) move-to-end and oldest

    def __len__(self) -> int:
        return len(self._open)

    def turn(self, conversation_id: str, agent, now: float) -> list[Ended]:
        """Count one turn; returns conversations that ended meanwhile (idle or evicted)."""
        conv = self._open.get(conversation_id)
        if conv is None:
            conv = self._open[conversation_id] = _Open(agent, 0, now, False)
        else:
            self._open.move_to_end(conversation_id)  # most recently active last
        conv.turns += 1
        conv.last = now
        if agent is not None:
            conv.agent = agent
        ended = self.expire(now)
        while len(self._open) > self.max_open:
            _, old = self._open.popitem(last=False)
            ended.append(Ended(old.agent, old.turns, old.escalated, ENDED_EVICTED))
        return ended

    def end(self, conversation_id: str, *, escalated: bool, agent=None, now: float) -> Ended | None:
        """End a conversation now; None when it is not open (never seen, or already ended)."""
        conv = self._open.pop(conversation_id, None)
        if conv is None:
            return None
        return Ended(agent if agent is not None else conv.agent, conv.turns, conv.escalated or escalated, ENDED_BY_APP)

    def expire(self, now: float) -> list[Ended]:
        """End the conversations idle for longer than ``idle_seconds``."""
        ended = []
        limit = now - self.idle_seconds
        while self._open:
            conv = next(iter(self._open.values()))
            if conv.last > limit:
                break
            self._open.popitem(last=False)
            ended.append(Ended(conv.agent, conv.turns, conv.escalated, ENDED_IDLE))
        return ended
