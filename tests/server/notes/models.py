"""The domain's table."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from ghaf.core.database import Base


class Note(Base):
    __tablename__ = "sample_notes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(String(2000))
