"""Seed data across the apps, and fresh databases on the test server for restores."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from accounts.models import User
from conversations.models import Conversation, Message
from datamgmt import pg
from knowledge.models import Chunk, Document


@pytest.fixture(autouse=True)
def _datamgmt_settings(settings, tmp_path):
    settings.DATAMGMT_BACKUP_DIR = str(tmp_path / "backups")
    settings.DATAMGMT_EXPORT_DIR = str(tmp_path / "exports")
    settings.DATAMGMT_BACKUP_RECIPIENTS = []
    settings.DATAMGMT_SCRYPT_LOG_N = 10  # age's default (18) costs a second per file


def seed_conversation(owner: User, *, title: str = "Trip", messages: int = 3) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title=title, metadata={"k": [1, "ü"]})
    for position in range(messages):
        Message.objects.create(
            conversation=conversation,
            position=position,
            role="user" if position % 2 == 0 else "assistant",
            content=f"message {position} of {title}, with 'quotes', <tags> & a\nnewline",
            tokens_in=position,
            cost=Decimal("0.000123"),
            metadata={"n": position},
        )
    Conversation.objects.filter(pk=conversation.pk).update(message_count=messages)
    return conversation


def seed_document(owner: User, *, title: str = "Guide", chunks: int = 2) -> Document:
    document = Document.objects.create(
        owner=owner,
        title=title,
        filename=f"{title}.txt",
        content_type="text/plain",
        size=11,
        sha256=uuid.uuid4().hex * 2,
        source=b"\x00\x01binary\xff",
        status="processed",
        metadata={"lang": "en"},
    )
    for position in range(chunks):
        Chunk.objects.create(
            document=document,
            position=position,
            content=f"chunk {position} of {title}",
            token_count=4,
            content_hash=uuid.uuid4().hex,
            embedding=[0.25 * (position + 1)] * 384,
        )
    return document


@pytest.fixture
def run_jobs(transactional_db: None) -> Iterator[Callable[[], list[str]]]:
    """Run the due jobs in this process, as a django-q2 worker would (claim, run, record):
    the statuses they ended with, in order."""
    from jobs import worker

    def run() -> list[str]:
        statuses = []
        while (status := worker.run_next_job()) is not None:
            statuses.append(status)
        return statuses

    yield run
    worker.executor_connection_close()


@pytest.fixture
def seeded(user: User, other_user: User) -> dict[str, Any]:
    return {
        "conversation": seed_conversation(user),
        "other_conversation": seed_conversation(other_user, title="Bob's"),
        "document": seed_document(user),
        "other_document": seed_document(other_user, title="Bob doc"),
    }


def table_contents(info: str) -> dict[str, list[str]]:
    """Every backed-up table's rows as text, sorted: what "equal databases" means here.
    (Leaving out the audit entry that says a backup was made: it is written after the
    backup's snapshot, so it is never in the backup it reports.)"""
    with pg.connect(info) as conn:
        return {
            table.name: [
                row[0]
                for row in conn.execute(
                    sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(
                        sql.Identifier(table.name)
                    )
                )
                if "datamgmt.backup_made" not in row[0]
            ]
            for table in pg.tables(conn)
            if table.backed_up
        }


@pytest.fixture
def fresh_database() -> Iterator[Callable[[], tuple[str, str]]]:
    """Make empty databases on the test server: (name, conninfo); dropped afterwards."""
    made: list[str] = []
    server = pg.django_conninfo(dbname="postgres")

    def make() -> tuple[str, str]:
        name = f"dm_restore_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return name, pg.django_conninfo(dbname=name)

    yield make
    for name in made:
        pg.database_drop(server, name)
