"""Conversation memory: server-side conversations and the prompts built from them (docs/conversations.md)."""
