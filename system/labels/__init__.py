"""Durable label store (SQLite/PostgreSQL), the human task queue, and label exports/imports."""

from system.labels.queue import AnnotationTask, HumanQueue
from system.labels.store import LabelRecord, LabelStore

__all__ = ["AnnotationTask", "HumanQueue", "LabelRecord", "LabelStore"]
