"""Secrets out of text that people read.

:func:`redact` is the one function every place text leaves adp for a person goes through: the
CLI's tables and messages, Dagster metadata and logs, `adp doctor`, a trajectory's
``error_message`` and verifier ``details``, a worker's log lines and metric labels. What the
agent did (its steps, its conversation) is data and is kept as it was; text *about* a run is
redacted. Standard library only, compiled regular expressions, linear in the text.

What it replaces by ``***`` (the rules are documented in docs/operations.md):

- the user information of a URL of any scheme (``scheme://user:***@host``; a user name alone,
  often a token, becomes ``***@host``), also when the password holds ``@ / ? #``;
- the value of a ``name=value`` pair (a URL query, a fragment, ``KEY=value``, a keyword
  argument) when any word of ``name`` is a secret word: password, passwd, pwd, pass,
  passphrase, secret, token, key, apikey, auth, authorization, signature, sig, credential(s),
  cookie, session, jwt, bearer, or a word ending in one of the long ones (``accesstoken``,
  ``clientsecret``, ``xapikey``, ``jsessionid``); so ``api_key``, ``access_token``,
  ``X-Amz-Signature`` and ``key_count`` are redacted, ``monkey``, ``keyboard`` and
  ``max_tokens`` are not;
- the value of a ``name: value`` field (an HTTP header, JSON, YAML, a Python dict) when the
  *last* word of ``name`` is one (``Authorization``, ``X-Api-Key``, ``"password"``); the last
  word only, so that ``KeyError: 'x'`` stays readable; an auth scheme in front of the value
  (``Basic``, ``Bearer``...) is kept;
- ``Bearer <token>`` anywhere;
- provider key shapes: OpenAI ``sk-`` / ``sk-proj-``, Anthropic ``sk-ant-``, Google ``AIza``,
  GitHub ``ghp_`` (and ``gho_ ghu_ ghs_ ghr_``) / ``github_pat_``, GitLab ``glpat-``, AWS access
  key ids (``AKIA`` ...), Slack ``xox?-`` / ``xapp-``, Hugging Face ``hf_``, Stripe
  ``sk_live_`` ..., Groq ``gsk_``, xAI ``xai-``, npm ``npm_``, PyPI ``pypi-``, JWTs
  (``eyJ....eyJ....``) and PEM private key blocks; the shape's prefix is kept (``sk-***``).

It is idempotent (``redact(redact(t)) == redact(t)``) and never raises.
"""

from __future__ import annotations

import functools
import re

MASK = "***"

# --- user information in URLs -------------------------------------------------------------

_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_SCHEME_MAX = 32
_SPACE = re.compile(r"\s")
_AT_HOST = re.compile(r"@(?=[\w\[%-])")  # an ``@`` a host follows
# ``host:port`` (or ``[v6]:port``): what a URL's authority looks like when an ``@`` further
# on belongs to the path (``http://localhost:3000/@vite/client``), not to a password.
_HOST_PORT = re.compile(r"(?:\[[^\]]*\]|[^:@\[\]]*):\d*")
_PATH_START = re.compile(r"[/?#]")


def _userinfo_end(rest: str) -> int | None:
    """Where the user information of the URL whose text after ``://`` is ``rest`` ends (its
    ``@``), or None when it has none.

    The split is the last ``@`` that a host follows, so a password may hold ``@``, ``/``, ``?``
    or ``#``; but text with ``/?#`` before that ``@`` counts as user information only when it
    starts as ``user:password``, not as ``host``/``host:port`` (``https://medium.com/@user``).
    """
    cut = found.start() if (found := _PATH_START.search(rest)) else len(rest)
    head = rest[:cut]
    if not (":" in head and not _HOST_PORT.fullmatch(head)):
        rest = head  # a host (and path): only an ``@`` before the path can end user information
    at = None
    for match in _AT_HOST.finditer(rest, 1):  # an empty user information is none
        at = match.start()
    return at


def _redact_userinfo(text: str) -> str:
    if "://" not in text or "@" not in text:
        return text
    marks = [match.start() for match in re.finditer("://", text)]
    starts = [_scheme_start(text, mark) for mark in marks]
    out: list[str] = []
    done = 0
    space = -1
    for index, mark in enumerate(marks):
        start = mark + 3
        if start < done:  # inside the user information already replaced
            continue
        if space < start:
            found = _SPACE.search(text, start)
            space = found.start() if found else len(text)
        end = space
        if index + 1 < len(marks) and starts[index + 1] < end:
            end = max(start, starts[index + 1])  # a URL inside this one (``?next=http://...``)
        rest = text[start:end]
        at = _userinfo_end(rest)
        if at is None:
            continue
        user, colon, _ = rest[:at].partition(":")
        out.append(text[done:start])
        out.append(f"{user}:{MASK}" if colon else MASK)
        done = start + at
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def _scheme_start(text: str, mark: int) -> int:
    start = mark
    while start > 0 and mark - start < _SCHEME_MAX and text[start - 1] in _SCHEME_CHARS:
        start -= 1
    return start


# --- secret names ---------------------------------------------------------------------------

_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "secret",
        "token",
        "key",
        "apikey",
        "auth",
        "authorization",
        "signature",
        "sig",
        "credential",
        "credentials",
        "cookie",
        "session",
        "sessionid",
        "jwt",
        "bearer",
        "privatekey",
    }
)
# A word ending in one of these is one too: accesstoken, clientsecret, xapikey, jsessionid.
_SECRET_SUFFIXES = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "signature",
    "credential",
    "credentials",
    "authorization",
    "sessionid",
    "sessid",
    "privatekey",
)
# A cheap first look, so that only names that may be secret pay for splitting into words.
_MAYBE_SECRET = r"(?=[\w.\-\[\]]*?(?i:pass|pwd|secret|token|key|auth|sig|credential|cookie|sess|jwt|bearer))"
_WORD_BOUNDARY = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@functools.lru_cache(maxsize=4096)
def _secret_words(name: str) -> tuple[bool, bool]:
    """Whether any word of ``name`` is a secret word, and whether its last word is."""
    words = [word.lower().rstrip("0123456789") for word in _WORD_BOUNDARY.split(name)]
    flags = [bool(word) and (word in _SECRET_WORDS or word.endswith(_SECRET_SUFFIXES)) for word in words if word]
    return any(flags), bool(flags) and flags[-1]


# A quoted value: ``"..."``, ``'...'`` or, inside JSON text, ``\"...\"``; escapes are skipped
# in pairs so that ``"a\"b"`` is one value. Bounded, so that no quote costs a scan of the text.
_QUOTED = r"(?P<quote>\\{0,3}[\"'])(?P<inner>(?:\\.|[^\\\n]){0,4096}?)(?P=quote)"
_AUTH_SCHEME = r"(?P<scheme>(?i:bearer|basic|digest|token|bot|negotiate|ntlm|apikey|aws4-hmac-sha256)[ \t]+)"

# ``name=value``: a URL query or fragment parameter, ``KEY=value``, a keyword argument.
_PARAMETER = re.compile(
    r"(?<![\w.\-\[\]])" + _MAYBE_SECRET + r"(?P<name>[A-Za-z_][\w.\-\[\]]*)=(?!=)"
    r"(?:" + _QUOTED + r"|(?P<bare>[^&;\s\"'<>`]+))"
)
# ``name: value``: an HTTP header, a JSON / YAML / dict field (the name perhaps quoted).
_FIELD = re.compile(
    r"(?<![\w.\-/@\\])(?P<open>\\{0,3}[\"']?)" + _MAYBE_SECRET + r"(?P<name>[A-Za-z_][\w.\-]*)(?P=open)[ \t]*:[ \t]*"
    r"(?:" + _QUOTED + r"|" + _AUTH_SCHEME + r"?(?P<bare>[^\s,;\"'<>{}\[\]()]+))"
)
_BEARER = re.compile(r"(?i:\bbearer)[ \t]+[A-Za-z0-9\-._~+/]+=*")


def _value(match: re.Match[str], name_is_secret: bool) -> str:
    if not name_is_secret:
        return match.group()
    start = match.start("inner") if match.group("quote") is not None else match.start("bare")
    end = match.end("inner") if match.group("quote") is not None else match.end("bare")
    if start == end:
        return match.group()
    offset = match.start()
    text = match.group()
    return text[: start - offset] + MASK + text[end - offset :]


def _parameter(match: re.Match[str]) -> str:
    return _value(match, _secret_words(match.group("name"))[0])


def _field(match: re.Match[str]) -> str:
    return _value(match, _secret_words(match.group("name"))[1])


# --- key shapes ---------------------------------------------------------------------------

_B = r"(?<![A-Za-z0-9_\-])"  # a shape starts a token
_KEY_SHAPES = [
    re.compile(_B + r"(sk-(?:ant-|proj-|svcacct-|admin-)?)[A-Za-z0-9_\-]{16,}"),  # OpenAI, Anthropic, DeepSeek
    re.compile(_B + r"(AIza)[0-9A-Za-z_\-]{30,}"),  # Google
    re.compile(_B + r"(gh[pousr]_)[A-Za-z0-9]{20,}"),  # GitHub tokens
    re.compile(_B + r"(github_pat_)[A-Za-z0-9_]{20,}"),  # GitHub fine-grained tokens
    re.compile(_B + r"(glpat-)[A-Za-z0-9_\-]{20,}"),  # GitLab
    re.compile(_B + r"((?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA))[A-Z0-9]{16}(?![A-Za-z0-9])"),  # AWS
    re.compile(_B + r"(xox[abeoprs]-|xapp-)[A-Za-z0-9\-]{10,}"),  # Slack
    re.compile(_B + r"(hf_)[A-Za-z0-9]{20,}"),  # Hugging Face
    re.compile(_B + r"((?:sk|rk)_(?:live|test)_)[A-Za-z0-9]{10,}"),  # Stripe
    re.compile(_B + r"(gsk_|xai-|npm_)[A-Za-z0-9]{20,}"),  # Groq, xAI, npm
    re.compile(_B + r"(pypi-)[A-Za-z0-9_\-]{40,}"),  # PyPI
    re.compile(_B + r"(eyJ)[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"),  # a JWT
]
_PRIVATE_KEY = re.compile(
    r"(-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----)(?:.*?(-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----)|.*)", re.DOTALL
)


def _keep_prefix(match: re.Match[str]) -> str:
    return match.group(1) + MASK


def _redact(text: str) -> str:
    if "PRIVATE KEY-----" in text:
        # A block cut short (a truncated message) is withheld to the end of the text.
        text = _PRIVATE_KEY.sub(lambda match: match.group(1) + MASK + (match.group(2) or ""), text)
    text = _redact_userinfo(text)
    if ":" in text:
        text = _FIELD.sub(_field, text)
    if "=" in text:
        text = _PARAMETER.sub(_parameter, text)
    text = _BEARER.sub(lambda match: match.group().split(None, 1)[0] + " " + MASK, text)
    for shape in _KEY_SHAPES:
        text = shape.sub(_keep_prefix, text)
    return text


def redact(text: str) -> str:
    """``text`` fit to show a person: every secret it carries replaced by ``***``.

    See the module's docstring for what counts as a secret. Idempotent; never raises (text it
    cannot check is withheld whole rather than shown).
    """
    try:
        return _redact(text if isinstance(text, str) else str(text))
    except Exception:  # a bug here must not show a secret, nor fail the caller
        return f"{MASK} (text withheld: it could not be checked for secrets)"
