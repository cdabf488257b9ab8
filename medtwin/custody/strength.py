"""A dependency-free passphrase strength estimate.

The estimate is deliberately simple and conservative (in the spirit of NIST SP 800-63B section
5.1.1.2: refuse known-common secrets, favour length): the entropy of a random string drawn from
the character classes present, after discounting repeats, keyboard/alphabet sequences and
common passwords. It is an estimate, not a guarantee; the Argon2id cost is the second line of
defence.
"""
from __future__ import annotations

import math
import re

#: A small list of the most common passwords (and stems of them), compared case-insensitively
#: after stripping trailing digits/symbols and undoing common letter substitutions.
COMMON = frozenset("""
password passw0rd pass 123456 12345678 123456789 1234567890 qwerty qwertyuiop abc123 111111
123123 letmein welcome monkey dragon iloveyou admin administrator login master sunshine
princess football baseball shadow superman trustno1 starwars whatever secret changeme default
hello freedom michael jennifer hunter2 asdfgh asdfghjkl zxcvbn zxcvbnm 1q2w3e4r 1qaz2wsx
qazwsx access batman charlie donald mustang soccer killer jordan tigger hospital doctor nurse
clinic patient medicine medical health medtwin keystore passphrase opensesame root toor test
testing guest user ninja azerty lovely flower summer winter autumn spring
""".split())

_SUBST = str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a",
                        "$": "s", "!": "i"})
_SEQUENCES = ("abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm")

#: (minimum bits, score, message)
_BANDS = ((80.0, 4, "strong"), (60.0, 3, "good"), (40.0, 2, "fair: add length"),
          (25.0, 1, "weak: use a longer passphrase of several words"))


def _pool(p: str) -> int:
    pool = 0
    if re.search(r"[a-z]", p):
        pool += 26
    if re.search(r"[A-Z]", p):
        pool += 26
    if re.search(r"[0-9]", p):
        pool += 10
    if re.search(r" ", p):
        pool += 1
    if re.search(r"[!-/:-@\[-`{-~]", p):
        pool += 32
    if any(ord(c) > 127 for c in p):
        pool += 64
    return max(pool, 1)


def _effective_length(p: str) -> float:
    """Length after discounting repeated characters and runs along common sequences."""
    s = p.lower()
    eff = 0.0
    for i, c in enumerate(s):
        if i and c == s[i - 1]:
            eff += 0.1          # aaaa
            continue
        if i and any((s[i - 1] + c) in seq or (c + s[i - 1]) in seq for seq in _SEQUENCES):
            eff += 0.25         # abcd, 4321, qwer
            continue
        eff += 1.0
    return eff


def _is_common(p: str) -> bool:
    core = re.sub(r"[\d\W_]+$", "", p.lower()).translate(_SUBST)
    core2 = re.sub(r"^[\d\W_]+", "", core)
    return p.lower() in COMMON or core in COMMON or core2 in COMMON or len(set(p)) <= 2


def passphrase_strength(p: str) -> tuple[int, str]:
    """Score a passphrase from 0 (trivially guessable) to 4 (strong), with a short reason.

    The score is ``floor(bits)`` banded at 25/40/60/80 bits, where ``bits = effective_length *
    log2(pool)``; common passwords (and their l33t or digit-suffixed variants) score 0.

    Raises:
        TypeError: ``p`` is not a string.
    """
    if not isinstance(p, str):
        raise TypeError("passphrase must be a string")
    if len(p) < 8:
        return 0, "too short: use at least 8 characters (a few words are better)"
    if _is_common(p):
        return 0, "a common password or a variant of one"
    bits = _effective_length(p) * math.log2(_pool(p))
    for floor, score, msg in _BANDS:
        if bits >= floor:
            return score, f"{msg} (about {bits:.0f} bits)"
    return 0, f"very weak (about {bits:.0f} bits)"
