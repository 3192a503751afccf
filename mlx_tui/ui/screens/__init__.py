"""Screens over the main one: help, settings, confirmation, saved chats, chat options."""
