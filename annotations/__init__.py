"""The annotation store: images, model proposals, corrected masks, prompts and reviews in SQLite."""

from .store import (
    SOURCES,
    STATUSES,
    Annotation,
    AnnotationStore,
    Prompt,
    Revision,
    StaleWrite,
    StoreError,
    session_prompts,
    stored_prompts,
)

__all__ = ["SOURCES", "STATUSES", "Annotation", "AnnotationStore", "Prompt", "Revision", "StaleWrite", "StoreError",
           "session_prompts", "stored_prompts"]
