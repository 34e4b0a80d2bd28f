"""RFC 9162 Merkle trees (SHA-256): tree hashing, inclusion and consistency proofs.

Leaf hash = SHA-256(0x00 || data); node hash = SHA-256(0x01 || left || right); the empty tree's
root is SHA-256(""). A tree of n > 1 leaves splits at k, the largest power of two below n.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from computewatch.crypto.errors import FormatError, ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MerkleTree",
    "RootBuilder",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
    "root_from_leaves",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + bytes(left) + bytes(right)).digest()


def _split(n: int) -> int:
    """Largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only RFC 9162 tree over leaf hashes; roots and proofs for any past size.

    Perfect subtrees (power-of-two size at an aligned offset) never change once full, so their
    hashes are cached; a root or proof then costs O(log n) hashing after the first computation.
    """

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._leaves: list[bytes] = []
        self._perfect: dict[tuple[int, int], bytes] = {}
        for data in leaves:
            self.append(data)

    @property
    def size(self) -> int:
        return len(self._leaves)

    def __len__(self) -> int:
        return len(self._leaves)

    def append(self, data: bytes) -> int:
        """Append a leaf's data (hashed with leaf_hash); returns its index."""
        return self.append_hash(leaf_hash(data))

    def append_hash(self, leaf: bytes) -> int:
        """Append an already computed leaf hash; returns its index."""
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise FormatError(f"a Merkle leaf hash is {HASH_SIZE} bytes")
        self._leaves.append(leaf)
        return len(self._leaves) - 1

    def leaf(self, index: int) -> bytes:
        return self._leaves[index]

    def _hash(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 1:
            return self._leaves[lo]
        perfect = n & (n - 1) == 0
        if perfect and (lo, n) in self._perfect:
            return self._perfect[(lo, n)]
        k = _split(n)
        h = node_hash(self._hash(lo, lo + k), self._hash(lo + k, hi))
        if perfect:
            self._perfect[(lo, n)] = h
        return h

    def _check_size(self, size: int, what: str = "size") -> None:
        if not isinstance(size, int) or size < 0 or size > len(self._leaves):
            raise FormatError(f"tree {what} {size!r} outside 0..{len(self._leaves)}")

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the first `size` leaves (default: all)."""
        size = len(self._leaves) if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Audit path for leaf `index` in the tree of the first `size` leaves (RFC 9162 2.1.3.1)."""
        size = len(self._leaves) if size is None else size
        self._check_size(size)
        if not isinstance(index, int) or not 0 <= index < size:
            raise FormatError(f"leaf index {index!r} outside 0..{size - 1}")
        proof: list[bytes] = []
        lo, hi, m = 0, size, index
        # Walk from the root down, collecting siblings; the proof lists them leaf-upwards.
        while hi - lo > 1:
            k = _split(hi - lo)
            if m < k:
                proof.append(self._hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._hash(lo, lo + k))
                lo, m = lo + k, m - k
        proof.reverse()
        return proof

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Proof that the tree of `old_size` leaves is a prefix of `new_size` (RFC 9162 2.1.4.1)."""
        new_size = len(self._leaves) if new_size is None else new_size
        self._check_size(new_size, "new size")
        if not isinstance(old_size, int) or not 0 < old_size <= new_size:
            raise FormatError(f"old size {old_size!r} outside 1..{new_size}")
        proof: list[bytes] = []
        lo, hi, m, complete = 0, new_size, old_size, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._hash(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._hash(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            proof.append(self._hash(lo, hi))
        proof.reverse()
        return proof


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """Root of the tree over raw leaf data (each hashed with leaf_hash)."""
    return MerkleTree(leaves).root()


class RootBuilder:
    """The root of a tree whose leaf hashes arrive one at a time, in O(log n) memory.

    A stack of perfect subtrees merged as they fill (the largest power of two below n is always
    the leftmost full subtree), folded right to left for the root: the same root as MerkleTree.
    """

    def __init__(self) -> None:
        self._sizes: list[int] = []
        self._stack: list[bytes] = []
        self.size = 0

    def add(self, leaf: bytes) -> None:
        if len(leaf) != HASH_SIZE:
            raise FormatError(f"a Merkle leaf hash is {HASH_SIZE} bytes")
        sizes, stack, size = self._sizes, self._stack, 1
        while sizes and sizes[-1] == size:
            leaf = hashlib.sha256(b"\x01" + stack.pop() + leaf).digest()
            sizes.pop()
            size *= 2
        stack.append(leaf)
        sizes.append(size)
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            h = hashlib.sha256(b"\x01" + left + h).digest()
        return h


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """Root of the tree over already hashed leaves (RootBuilder over all of them)."""
    builder = RootBuilder()
    for h in hashes:
        builder.add(h)
    return builder.root()


def _check_proof(proof: Sequence[bytes]) -> list[bytes]:
    out = []
    for i, p in enumerate(proof):
        if not isinstance(p, (bytes, bytearray)) or len(p) != HASH_SIZE:
            raise ProofError(f"proof element {i} is not a {HASH_SIZE}-byte hash")
        out.append(bytes(p))
    return out


def _walk(fn: int, sn: int, fr: bytes, sr: bytes, path: list[bytes]) -> tuple[bytes, bytes]:
    """The shared loop of RFC 9162 2.1.3.2 / 2.1.4.2, from node fn of a last node sn upwards.

    `sr` folds in every path element (left or right sibling); `fr` only the left siblings, which
    is what rebuilds the old root in a consistency proof. Raises if the path length is wrong.
    """
    for c in path:
        if sn == 0:
            raise ProofError("proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            # A right-edge node with no sibling at this level: skip the levels it is promoted through.
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof is shorter than the tree is deep")
    return fr, sr


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless `proof` shows leaf `index` with `leaf_hash` in the tree `root` of `size`."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    for name, value in (("leaf hash", leaf_hash), ("root", root)):
        if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
            raise ProofError(f"{name} is not a {HASH_SIZE}-byte hash")
    path = _check_proof(proof)
    _, r = _walk(index, size - 1, bytes(leaf_hash), bytes(leaf_hash), path)
    if r != root:
        raise ProofError("recomputed root does not match the given root")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise ProofError unless `proof` shows tree (old_size, old_root) is a prefix of (new_size, new_root)."""
    if old_size < 0 or new_size < old_size:
        raise ProofError(f"sizes must satisfy 0 <= old size ({old_size}) <= new size ({new_size})")
    if old_size == new_size:
        if proof:
            raise ProofError("sizes are equal, so the proof must be empty")
        if old_root != new_root:
            raise ProofError("sizes are equal but the roots differ")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofError("an empty tree's root must be SHA-256 of the empty string")
        return
    if old_size == 0:
        # Every tree extends the empty tree; a "proof" of it proves nothing, so it is refused.
        raise ProofError("consistency with an empty tree is meaningless; old size must be > 0")
    path = _check_proof(proof)
    if not path:
        raise ProofError("proof is empty but the sizes differ")
    if old_size & (old_size - 1) == 0:
        # The old tree is a perfect subtree of the new one: its root is the path's starting node.
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr, sr = _walk(fn, sn, path[0], path[0], path[1:])
    if fr != old_root:
        raise ProofError("proof does not reproduce the old root")
    if sr != new_root:
        raise ProofError("proof does not reproduce the new root")
