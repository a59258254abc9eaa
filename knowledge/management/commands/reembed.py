"""Re-embed documents into the active embedding space, with a progress bar.

Each document is re-embedded in its own transaction, so Ctrl-C (or a crash) leaves every
document wholly in one space; running the command again carries on where it stopped.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from knowledge.embeddings import active_embedder
from knowledge.selectors import documents_to_reembed
from knowledge.services import document_reembed


class Command(BaseCommand):
    help = "Re-embed processed documents whose vectors are not in the active embedding space."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--all", action="store_true", help="Re-embed every document, even current ones."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        embedder = active_embedder()
        documents = documents_to_reembed(space=embedder.space, everything=options["all"])
        total_chunks = sum(chunks for _, chunks in documents)
        self.stdout.write(
            f"Re-embedding {len(documents)} document(s), {total_chunks} chunk(s) "
            f"into {embedder.space}."
        )
        done = 0
        with tqdm(total=total_chunks, unit="chunk", file=self.stderr._out, disable=None) as bar:
            for document_id, chunks in documents:
                document_reembed(document_id=document_id, embedder=embedder)
                bar.update(chunks)
                done += 1
        self.stdout.write(self.style.SUCCESS(f"Re-embedded {done} document(s)."))
