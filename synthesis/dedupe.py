"""Is a task new? Exact duplicates by a hash of its normalised text, near duplicates by MinHash
LSH over word pairs, against every task the index has seen (all batches, all generations).

Text is normalised before it is hashed or shingled (:func:`normalise`): Unicode NFKC, invisible
characters removed (format characters, category Cf, such as zero-width spaces and joiners; the
other default-ignorable code points, such as variation selectors and Hangul fillers; control
characters), case folded (``str.casefold``: "Straße" and "STRASSE" are one word), and words
joined by single spaces. So a copy does not become new by an invisible character, by case or
by spacing. Homoglyphs (a Cyrillic letter that looks Latin) are not mapped.

Signatures are MinHash over word 2-shingles (pairs of words: a paraphrase with a few words
changed keeps most of them, a different task keeps few) with ``NUM_PERM`` universal hash functions
(each a 64-bit shingle hash XORed with its own random seed, then through murmur3's 64-bit
finaliser, which mixes every input bit into every output bit); LSH cuts each
signature into ``BANDS`` bands of ``ROWS`` rows, so two texts with Jaccard similarity ``s``
share a band with probability ``1 - (1 - s^ROWS)^BANDS`` (about 0.96 at 0.7, 0.08 at 0.4).
A candidate sharing a band is then compared on its whole signature (an estimate of the
Jaccard similarity) against the threshold. Known tasks are kept as sorted numpy arrays per
band, so a lookup is a binary search and 100k known tasks take ~10 MB, never O(n²).

The index persists as one ``.npz`` file (numpy arrays only, no pickle), written atomically,
with the version of its normalisation: an index made by another version is not loaded (its
hashes and signatures would not compare with new ones), so it is rebuilt from the known tasks.
It is a cache of what its owner knows: :meth:`DedupeIndex.sync` makes it hold exactly the
known tasks, forgetting any it holds that are no longer known.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

NUM_PERM = 120
BANDS, ROWS = 20, 6  # (1/20)^(1/6) ≈ 0.61: pairs near the 0.7 default threshold almost always collide
SHINGLE_WORDS = 2
DEFAULT_THRESHOLD = 0.7
FORMAT_VERSION = 2  # of the normalisation, hashes and signatures; 1 lower-cased only
_WORD = re.compile(r"\w+")
# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt) beyond category Cf: code
# points a renderer shows as nothing (combining grapheme joiner, Hangul fillers, Mongolian and
# other variation selectors, reserved tag-range code points).
_IGNORABLE_RANGES = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)  # fmt: skip

Signatures = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class Duplicate:
    """Why a text is not new: the key of the task it repeats, and how."""

    kind: Literal["exact", "near"]
    of: str
    similarity: float


def normalise(text: str) -> str:
    """What two copies of a task have in common: NFKC, no invisible characters, case folded,
    words only, single spaces."""
    invisible = _invisible()
    text = unicodedata.normalize("NFKC", invisible.sub("", text))
    # Case folding can leave text that NFKC changes again (and NFKC can expose an ignorable).
    text = invisible.sub("", unicodedata.normalize("NFKC", text.casefold()))
    return " ".join(_WORD.findall(text))


@functools.cache
def _invisible() -> re.Pattern[str]:
    """Every format (Cf) and other default-ignorable code point, and the controls that are not
    whitespace: characters that change a text's bytes but not what a reader sees."""
    chars = [
        chr(code)
        for code in range(sys.maxunicode + 1)
        if (category := unicodedata.category(chr(code))) == "Cf" or (category == "Cc" and not chr(code).isspace())
    ]
    chars += [chr(code) for low, high in _IGNORABLE_RANGES for code in range(low, high + 1)]
    codes = sorted({ord(char) for char in chars})
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return re.compile("[" + "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in ranges) + "]")


def text_hash(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()


class DedupeIndex:
    """Every known task's exact hash and MinHash signature, with LSH bands for lookups.

    Args:
        threshold: estimated Jaccard similarity at or above which a text is a near duplicate
            (ADP_SYNTH_DEDUP_THRESHOLD).
        seed: of the hash functions; an index only compares signatures made with its own.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, seed: int = 1) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.seed = seed
        self._seeds = np.random.default_rng(seed).integers(0, 2**63, NUM_PERM, dtype=np.uint64)
        self.keys: list[str] = []
        self._hashes: list[str] = []  # each key's text_hash, in the order of keys
        self._exact: dict[str, int] = {}  # text_hash -> the first row with it
        self._signatures: Signatures = np.empty((0, NUM_PERM), dtype=np.uint64)
        self._band_keys: list[npt.NDArray[np.uint64]] = [np.empty(0, dtype=np.uint64)] * BANDS
        self._band_ids: list[npt.NDArray[np.int64]] = [np.empty(0, dtype=np.int64)] * BANDS

    def __len__(self) -> int:
        return len(self.keys)

    def signatures(self, texts: Sequence[str]) -> Signatures:
        """MinHash signatures of ``texts``, one row each."""
        out = np.empty((len(texts), NUM_PERM), dtype=np.uint64)
        for row, text in enumerate(texts):
            shingles = _shingle_hashes(normalise(text))
            out[row] = _mix(self._seeds[:, None] ^ shingles[None, :]).min(axis=1)
        return out

    def check(self, texts: Sequence[str]) -> list[Duplicate | None]:
        """For each text in order: the known task, or the earlier text of ``texts`` (``#<position>``),
        it repeats; None for a new one. Nothing is added: :meth:`add_new` checks and adds."""
        return self._check(texts, self.signatures(texts))

    def add(self, keys: Sequence[str], texts: Sequence[str], signatures: Signatures | None = None) -> None:
        """Remember tasks (their key, e.g. the task id, and text)."""
        if len(keys) != len(texts):
            raise ValueError("one key per text")
        signatures = self.signatures(texts) if signatures is None else signatures
        start = len(self.keys)
        self.keys.extend(keys)
        for offset, text in enumerate(texts):
            digest = text_hash(text)
            self._hashes.append(digest)
            self._exact.setdefault(digest, start + offset)
        self._signatures = np.vstack([self._signatures, signatures])
        ids = np.arange(start, start + len(keys), dtype=np.int64)
        for band, hashes in enumerate(_band_hashes(signatures).T):
            merged_keys = np.concatenate([self._band_keys[band], hashes])
            merged_ids = np.concatenate([self._band_ids[band], ids])
            order = np.argsort(merged_keys, kind="stable")
            self._band_keys[band], self._band_ids[band] = merged_keys[order], merged_ids[order]

    def sync(self, known: Mapping[str, str]) -> tuple[int, int]:
        """Hold exactly the ``known`` tasks (key -> text): forget every key that is not among
        them (or whose text changed), add those missing. Returns (forgotten, added).

        The index is a cache of what its owner knows (for synthesis: the tasks in the lake), so
        a task that left the lake becomes new again rather than blocking its text for ever.
        """
        wanted = {key: text_hash(text) for key, text in known.items()}
        seen: set[str] = set()
        keep: list[int] = []
        for row, key in enumerate(self.keys):
            if key not in seen and wanted.get(key) == self._hashes[row]:
                keep.append(row)
            seen.add(key)
        forgotten = len(self.keys) - len(keep)
        if forgotten:
            self._restore([self.keys[row] for row in keep], [self._hashes[row] for row in keep], self._signatures[keep])
        held = set(self.keys)
        missing = [key for key in known if key not in held]
        self.add(missing, [known[key] for key in missing])
        return forgotten, len(missing)

    def add_new(self, keys: Sequence[str], texts: Sequence[str]) -> list[Duplicate | None]:
        """:meth:`check` the texts, add the new ones, and return what :meth:`check` found."""
        signatures = self.signatures(texts)
        verdicts = self._check(texts, signatures)
        new = [i for i, verdict in enumerate(verdicts) if verdict is None]
        self.add([keys[i] for i in new], [texts[i] for i in new], signatures[new])
        return verdicts

    def save(self, path: Path) -> None:
        """Write the index to ``path`` (.npz) atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        try:
            with temporary.open("wb") as handle:
                np.savez(
                    handle,
                    keys=np.array(self.keys, dtype=np.str_),
                    hashes=np.array(self._hashes, dtype=np.str_),
                    signatures=self._signatures,
                    settings=np.array([self.threshold, self.seed], dtype=np.float64),
                    version=np.array([FORMAT_VERSION], dtype=np.int64),
                )
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path, threshold: float = DEFAULT_THRESHOLD) -> DedupeIndex:
        """The index saved at ``path``; an empty one if there is none yet, or if it was made with
        another normalisation (:data:`FORMAT_VERSION`): then :meth:`sync` rebuilds it."""
        if not path.exists():
            return cls(threshold)
        with np.load(path, allow_pickle=False) as data:
            if "version" not in data or int(data["version"][0]) != FORMAT_VERSION:
                return cls(threshold)
            index = cls(threshold, seed=int(data["settings"][1]))
            index._restore([str(key) for key in data["keys"]], [str(h) for h in data["hashes"]], data["signatures"])
        return index

    def _restore(self, keys: list[str], hashes: list[str], signatures: Signatures) -> None:
        """Hold exactly these rows: the exact-hash map and the LSH bands rebuilt from them."""
        self.keys, self._hashes, self._signatures = keys, hashes, signatures
        self._exact = {}
        for row, digest in enumerate(hashes):
            self._exact.setdefault(digest, row)
        ids = np.arange(len(keys), dtype=np.int64)
        for band, band_hashes in enumerate(_band_hashes(signatures).T):
            order = np.argsort(band_hashes, kind="stable")
            self._band_keys[band], self._band_ids[band] = band_hashes[order], ids[order]

    def _check(self, texts: Sequence[str], signatures: Signatures) -> list[Duplicate | None]:
        bands = _band_hashes(signatures)
        verdicts: list[Duplicate | None] = []
        seen_exact: dict[str, int] = {}
        seen_bands: list[dict[int, list[int]]] = [{} for _ in range(BANDS)]
        for row, text in enumerate(texts):
            digest = text_hash(text)
            if digest in self._exact:
                verdicts.append(Duplicate("exact", self.keys[self._exact[digest]], 1.0))
                continue
            if digest in seen_exact:
                verdicts.append(Duplicate("exact", f"#{seen_exact[digest]}", 1.0))
                continue
            verdict = self._near_known(signatures[row], bands[row]) or _near_earlier(
                row, signatures, bands[row], seen_bands, self.threshold
            )
            verdicts.append(verdict)
            if verdict is None:
                seen_exact[digest] = row
                for band, value in enumerate(bands[row]):
                    seen_bands[band].setdefault(int(value), []).append(row)
        return verdicts

    def _near_known(self, signature: Signatures, bands: npt.NDArray[np.uint64]) -> Duplicate | None:
        candidates: set[int] = set()
        for band, value in enumerate(bands):
            keys = self._band_keys[band]
            left, right = np.searchsorted(keys, value, "left"), np.searchsorted(keys, value, "right")
            candidates.update(self._band_ids[band][left:right].tolist())
        if not candidates:
            return None
        ids = np.fromiter(candidates, dtype=np.int64)
        similarity = (self._signatures[ids] == signature).mean(axis=1)
        best = int(similarity.argmax())
        if similarity[best] < self.threshold:
            return None
        return Duplicate("near", self.keys[int(ids[best])], float(similarity[best]))


def _near_earlier(
    row: int,
    signatures: Signatures,
    bands: npt.NDArray[np.uint64],
    seen: list[dict[int, list[int]]],
    threshold: float,
) -> Duplicate | None:
    """Near duplicates among the texts of the same call, earlier than ``row``."""
    candidates = {earlier for band, value in enumerate(bands) for earlier in seen[band].get(int(value), [])}
    for earlier in sorted(candidates):
        similarity = float((signatures[earlier] == signatures[row]).mean())
        if similarity >= threshold:
            return Duplicate("near", f"#{earlier}", similarity)
    return None


def _shingle_hashes(normalised: str) -> npt.NDArray[np.uint64]:
    words = normalised.split() or [""]
    count = max(1, len(words) - SHINGLE_WORDS + 1)
    shingles = {" ".join(words[i : i + SHINGLE_WORDS]) for i in range(count)}
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in shingles),
        dtype=np.uint64,
        count=len(shingles),
    )


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """murmur3's fmix64, element-wise (multiplications wrap modulo 2^64, as intended)."""
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


def _band_hashes(signatures: Signatures) -> npt.NDArray[np.uint64]:
    """One 64-bit hash per band of each signature (rows by BANDS)."""
    banded = signatures.reshape(len(signatures), BANDS, ROWS)
    mixed = np.zeros((len(signatures), BANDS), dtype=np.uint64)
    for column in range(ROWS):
        mixed = (mixed * np.uint64(0x100000001B3)) ^ banded[:, :, column]  # FNV-style, wrapping
    return mixed
