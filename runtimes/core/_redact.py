"""Secrets out of text that people read.

:func:`redact` is the one function every place text leaves adp for a person goes through: the
CLI's tables and messages, Dagster metadata and logs, `adp doctor`, a trajectory's
``error_message`` and verifier ``details``, a worker's log lines and metric labels. What the
agent did (its steps, its conversation) is data and is kept as it was; text *about* a run is
redacted. Standard library only, compiled regular expressions, linear in the text.

What it replaces by ``***`` (the rules are documented in docs/operations.md):

- user information: of a URL of any scheme (``scheme://user:***@host``; a user name alone,
  often a token, becomes ``***@host``), also when the password holds ``@ / ? #`` and when the
  URL is percent-encoded inside another one (``https%3A%2F%2Fuser%3A***%40host``); the
  password of ``user:pw@host`` without a scheme (``//user:pw@host``, scp's
  ``user:pw@host:repo.git``, a Go DSN ``user:pw@tcp(host)``) and of ``curl -u user:pw``;
- the value of a ``name=value`` pair (a URL query or fragment, also percent-encoded as
  ``name%3Dvalue``; ``KEY=value``, ``key = value`` in INI/TOML/code, a keyword argument, a CLI
  flag ``--name=value``) and of a flag ``--name value``, when a word of ``name`` is a secret
  word: password, passwd, pwd, passphrase, secret, token, apikey, credential(s), cookie,
  session, jwt, bearer, signature, authorization, and the ambiguous key, pass, auth, sig; a
  word ending in a long one counts (``accesstoken``, ``clientsecret``, ``xapikey``,
  ``jsessionid``); ``monkey``, ``keyboard`` and ``max_tokens`` do not;
- the value of a ``name: value`` field (an HTTP header, JSON, YAML, a Python dict) and of an
  XML element ``<name>value</name>`` when the *last* word of ``name`` is one (``Authorization``,
  ``X-Api-Key``, ``"password"``), so that ``KeyError: 'x'`` stays readable; an auth scheme in
  front of a value (``Basic``, ``Bearer``...) is kept and the credential after it masked;
- ``Bearer <token>`` anywhere;
- provider key shapes: OpenAI ``sk-`` / ``sk-proj-``, Anthropic ``sk-ant-``, Google ``AIza``,
  GitHub ``ghp_`` (and ``gho_ ghu_ ghs_ ghr_``) / ``github_pat_``, GitLab ``glpat-``, AWS access
  key ids (``AKIA`` ...), Slack ``xox?-`` / ``xapp-``, Hugging Face ``hf_``, Stripe
  ``sk_live_`` ..., Groq ``gsk_``, xAI ``xai-``, npm ``npm_``, PyPI ``pypi-``, Telegram bot
  tokens, JWTs (``eyJ....eyJ....``), PEM and PGP private key blocks, and the secret part of
  webhook URLs (Slack, Discord, Teams, Zapier, IFTTT); the shape's prefix is kept (``sk-***``).

What is *not* a secret, so that code in a traceback stays code: a name whose last word is a
measure or a kind (``token_count``, ``password_length``, ``token_type``, ``sig_figs``,
``password_file``: see ``_MEASURES``) or whose first is a count or a switch (``max_token``,
``--no-auth``); a value that is a literal (``None``, ``true``, ``null``, ``lambda``), a keyword
(``if not token: raise``), a number of up to four digits, a ``$VARIABLE``, the variable the
name is named after (``key=key``), a call or subscript (``key=itemgetter(1)``,
``os.environ["X"]``), an f-string with a placeholder, ``self.x``, an attribute passed on
(``api_key=settings.api_key)``) or a short lowercase name closing a call
(``sorted(xs, key=len)``); and, under an ambiguous name alone (``key: id``, ``pass: 10/10``,
``sig: SIGKILL``, ``{'key': 'value'}``, ``auth=failed``), a value that does not look like a
credential. In a URL query and on a command line every value counts.

It is idempotent (``redact(redact(t)) == redact(t)``) and never raises. Every pattern is
linear: a name is bounded and can start only where the previous character cannot be part of
it, a value is scanned once (the scan resumes after it), and the greedy parts of a pattern
cannot run over the place where the next match could start.
"""

from __future__ import annotations

import functools
import re

MASK = "***"
_ROUNDS = 4  # a rule's mask can make another rule's text; a few rounds reach the fixpoint


def _masked(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each of ``spans`` (sorted, disjoint) replaced by :data:`MASK`."""
    if not spans:
        return text
    out: list[str] = []
    done = 0
    for start, end in spans:
        out += (text[done:start], MASK)
        done = end
    out.append(text[done:])
    return "".join(out)


def _last(pattern: re.Pattern[str], text: str, start: int, end: int) -> re.Match[str] | None:
    """The last match of ``pattern`` in ``text[start:end]``."""
    last = None
    for last in pattern.finditer(text, start, end):  # noqa: B007  (the loop finds the last)
        pass
    return last


def _is_mask(value: str) -> bool:
    """A value that is only asterisks: already masked (by this function, or a display's ``****``)."""
    return not value.strip("*")


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


# A URL percent-encoded inside another (``?next=https%3A%2F%2Fuser%3Apw%40host``), once or
# twice (``%253A%252F%252F``): the same user information, its delimiters encoded.
_ENCODED_MARK = re.compile(r"(?i)%(25)?3A(?:%(?:25)?2F|/){2}")
_ENCODED_AUTHORITY_END = (
    re.compile(r"(?i)%(?:2F|3F|23|26|20|22|27|3C|3E)|[\s/?#&\"'<>`]"),
    re.compile(r"(?i)%(?:25)?(?:2F|3F|23|26|20|22|27|3C|3E)|[\s/?#&\"'<>`]"),
)
_ENCODED_AT = (re.compile(r"(?i)%40|@"), re.compile(r"(?i)%(?:25)?40|@"))
_ENCODED_COLON = (re.compile(r"(?i)%3A|:"), re.compile(r"(?i)%(?:25)?3A|:"))


def _redact_encoded_userinfo(text: str) -> str:
    spans: list[tuple[int, int]] = []
    done = 0
    for mark in _ENCODED_MARK.finditer(text):
        start = mark.end()
        if start < done:
            continue
        level = 1 if mark.group(1) else 0
        found = _ENCODED_AUTHORITY_END[level].search(text, start)
        end = found.start() if found else len(text)
        at = _last(_ENCODED_AT[level], text, start, end)
        done = end
        if at is None or at.start() == start:
            continue
        colon = _ENCODED_COLON[level].search(text, start, at.start())
        secret_start = colon.end() if colon else start
        if secret_start < at.start() and not _is_mask(text[secret_start : at.start()]):
            spans.append((secret_start, at.start()))
    return _masked(text, spans)


# ``user:password@host`` without a scheme: ``//user:pw@host``, scp's ``user:pw@host:path``, a
# Go DSN ``user:pw@tcp(host:3306)/db``. A token is a run of text between these delimiters.
_TOKEN_DELIMITERS = r"\s\"'`<>(){},;|"  # not ``[ ]``: an IPv6 host is no user
_AT_TOKEN = re.compile(rf"(?<![^{_TOKEN_DELIMITERS}])[^{_TOKEN_DELIMITERS}]*@[^{_TOKEN_DELIMITERS}]*")
_USER = re.compile(r"[\w.+\-]{0,64}")
# ``scheme:user@host`` URIs whose user is no password: ``mailto:bob@example.com``.
_NOT_USERS = frozenset({"mailto", "xmpp", "sip", "sips", "tel", "im", "pres", "news", "nntp", "urn", "acct"})


def _redact_user_passwords(text: str) -> str:
    spans: list[tuple[int, int]] = []
    for token in _AT_TOKEN.finditer(text):
        word = token.group()
        if ":" not in word or "://" in word:  # no password, or a URL (its own rule)
            continue
        at = _last(_AT_HOST, word, 1, len(word))
        if at is None:
            continue
        head = word[: at.start()]
        lead = 2 if head.startswith("//") else 0
        colon = head.find(":", lead)
        if colon < 0:
            continue
        user = head[max(lead, head.rfind("=", lead, colon) + 1) : colon]
        password = head[colon + 1 :]
        if (
            not _USER.fullmatch(user)
            or user.lower() in _NOT_USERS
            or _is_mask(password)
            or (user.isdigit() and password.isdigit())  # a time, a uid:gid
        ):
            continue
        spans.append((token.start() + colon + 1, token.start() + at.start()))
    return _masked(text, spans)


# ``curl -u user:password`` (``--user``, ``-U``/``--proxy-user``), where the colon splits them.
_USER_FLAG = re.compile(
    r"(?<![^\s\"'])(?:-u|-U|--user|--proxy-user)(?:[ \t]{1,16}|=)?[\"']?"
    r"(?P<user>[^\s:\"']{0,128}):(?P<password>[^\s\"']+)"
)


def _user_flag(match: re.Match[str]) -> str:
    user, password = match.group("user"), match.group("password")
    if _is_mask(password) or (user.isdigit() and password.isdigit()):
        return match.group()  # already masked, or docker's ``-u 1000:1000``
    return match.group()[: match.start("password") - match.start()] + MASK


# --- secret names ---------------------------------------------------------------------------

# The value of a name with one of these words is a secret, whatever it looks like.
_STRONG_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "passin",
        "passout",
        "secret",
        "secrets",
        "token",
        "apikey",
        "credential",
        "credentials",
        "creds",
        "cookie",
        "cookies",
        "sessionid",
        "sessid",
        "jwt",
        "bearer",
        "signature",
        "authorization",
        "privatekey",
    }
)
# A word ending in one of these is one too: accesstoken, clientsecret, xapikey, jsessionid.
_STRONG_SUFFIXES = (
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
    "secretkey",
    "accesskey",
)
# Ambiguous alone (``Primary key: id``, ``pass: 10/10``, ``sig: SIGKILL``); strong after a
# word that makes them a credential: ``api_key``, ``secret_key``, ``db_pass``, ``basic_auth``.
_WEAK_WORDS = frozenset({"key", "pass", "auth", "sig", "session", "sess"})
_KEY_KINDS = frozenset(
    {
        "api",
        "private",
        "secret",
        "access",
        "master",
        "signing",
        "sign",
        "encryption",
        "enc",
        "client",
        "app",
        "application",
        "license",
        "subscription",
        "account",
        "service",
        "consumer",
        "shared",
        "hmac",
        "ssh",
        "gpg",
        "pgp",
        "aes",
        "webhook",
        "deploy",
        "storage",
        "auth",
        "session",
        "recovery",
        "root",
        "admin",
    }
)
# A name whose last word is a measure of a secret, or its kind, or where it is, names no
# secret: token_count, password_length, token_type, sig_figs, password_file, token_url.
_MEASURES = frozenset(
    {
        "count",
        "counts",
        "cnt",
        "num",
        "number",
        "length",
        "len",
        "size",
        "type",
        "types",
        "kind",
        "figs",
        "digits",
        "limit",
        "limits",
        "max",
        "min",
        "total",
        "rate",
        "ratio",
        "percent",
        "pct",
        "index",
        "idx",
        "usage",
        "budget",
        "version",
        "method",
        "methods",
        "mode",
        "scheme",
        "format",
        "fmt",
        "provider",
        "timeout",
        "ttl",
        "expiry",
        "expires",
        "expiration",
        "enabled",
        "required",
        "file",
        "files",
        "path",
        "paths",
        "dir",
        "name",
        "names",
        "label",
        "labels",
        "prefix",
        "env",
        "var",
        "field",
        "fields",
        "prompt",
        "stdin",
        "helper",
        "url",
        "uri",
        "urls",
        "endpoint",
        "host",
        "port",
        "ref",
        "arn",
    }
)
# ... and so does a name that starts as a count or a switch: max_token, n_keys, use_auth,
# --no-password (a flag without a value of its own).
_NOT_SECRET_FIRST = frozenset(
    {
        "max",
        "min",
        "num",
        "n",
        "nb",
        "total",
        "count",
        "cnt",
        "is",
        "has",
        "use",
        "enable",
        "disable",
        "require",
        "allow",
        "skip",
        "no",
        "show",
        "hide",
        "print",
        "with",
        "without",
        "ask",
        "prompt",
    }
)
_WORD_BOUNDARY = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
NONE, WEAK, STRONG = 0, 1, 2


def _word_strength(word: str, previous: str) -> int:
    if word in _STRONG_WORDS or word.endswith(_STRONG_SUFFIXES) or (previous + word) in _STRONG_WORDS:
        return STRONG  # ``session``+``id`` is ``sessionid``, ``api``+``key`` is ``apikey``
    if word in _WEAK_WORDS:
        if word == "key":
            return STRONG if previous in _KEY_KINDS else WEAK
        return STRONG if previous and word in ("pass", "auth") else WEAK
    return NONE


@functools.lru_cache(maxsize=4096)
def _strength(name: str) -> tuple[int, int]:
    """How secret the value of ``name`` is, by its strongest word and by its last word:
    :data:`NONE`, :data:`WEAK` (an ambiguous word: the value must look like a credential
    where that matters) or :data:`STRONG`."""
    words = [word.lower().rstrip("0123456789") for word in _WORD_BOUNDARY.split(name)]
    words = [word for word in words if word]
    if not words or words[-1] in _MEASURES or (len(words) > 1 and words[0] in _NOT_SECRET_FIRST):
        return NONE, NONE
    strengths = [_word_strength(word, words[index - 1] if index else "") for index, word in enumerate(words)]
    return max(strengths), strengths[-1]


# --- values ---------------------------------------------------------------------------------

# A quoted value: ``"..."``, ``'...'`` or, inside JSON text, ``\"...\"``; escapes are skipped
# in pairs so that ``"a\"b"`` is one value. Bounded, so that no quote costs a scan of the text.
_QUOTED = re.compile(r"(?P<quote>\\{0,3}[\"'])(?P<inner>(?:\\.|[^\\\n]){0,4096}?)(?P=quote)")
_OPEN_QUOTE = re.compile(r"\\{0,3}[\"']")
_LINE_END = re.compile(r"[\r\n]|$")
_AUTH_SCHEME = re.compile(
    r"(?i:bearer|basic|digest|token|bot|negotiate|ntlm|apikey|aws4-hmac-sha256)[ \t]{1,16}(?=[^\s\"'])"
)


def _takes_scheme(name: str) -> bool:
    """Whether the value of ``name`` may start with an auth scheme (``Authorization: Bearer x``);
    elsewhere ``token = token or default`` is code."""
    return name.lower().endswith(("authorization", "auth", "authentication"))


_LITERALS = frozenset({"none", "null", "nil", "true", "false", "undefined", "lambda", "nan"})
# Words that start an expression or a statement: ``if not token: raise``, ``token = await f()``.
_KEYWORDS = frozenset(
    {"raise", "return", "pass", "continue", "break", "yield", "await", "async", "not", "del", "assert"}
    | {"import", "from", "if", "for", "while", "with", "try", "global", "nonlocal", "def", "class"}
    | {"new", "typeof", "this", "const", "let", "var", "function"}
)
_NUMBER = re.compile(r"[+-]?(?:\d{1,4}(?:\.\d+)?|\d*\.\d+)")
_VARIABLE = re.compile(r"\$\{?[A-Za-z_]\w*\}?|\$")  # ``$DB_PASSWORD``: a reference, not the secret
_IDENTIFIER_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_SHORT_NAME = re.compile(r"[a-z_][a-z0-9_]{0,2}")  # ``len``, ``str``, ``id``
_ATTRIBUTE = re.compile(r"[a-z_]+(?:\.[a-z_]+)+")  # ``settings.api_key``
_NAME_SEGMENT = re.compile(r"[\w\-]+(?=[\"'\]]*\Z)")  # ``token`` of ``self.token``, ``d["token"]``
_STRING_PREFIX = re.compile(r"[rRbBfFuU]{1,2}")  # ``f"..."``, ``rb'...'``
_CODE_WORDS = frozenset(  # type annotations: ``token: str``, ``password: SecretStr``
    {"str", "bytes", "int", "float", "bool", "dict", "list", "tuple", "set", "object", "Any", "string"}
    | {"number", "boolean", "SecretStr", "SecretBytes", "Path"}
)
_DIGIT = re.compile(r"\d")
_LOWER = re.compile(r"[a-z]")
_UPPER = re.compile(r"[A-Z]")
_SYMBOL = re.compile(r"[^A-Za-z0-9._*\-\s]")
_USER_AND_PASSWORD = re.compile(r"[^:\s]+:[^:\s]+")


def _looks_like_credential(value: str) -> bool:
    """Whether a value under an ambiguous name (``key``, ``pass``, ``sig``, ``auth``) looks like
    a credential rather than a word, a count or an identifier: six characters or more mixing
    letters and digits, ten or more mixing two kinds (lower, upper, digit, symbol), or
    ``user:password``."""
    if _USER_AND_PASSWORD.fullmatch(value):
        return True
    if len(value) < 6:
        return False
    kinds = [bool(pattern.search(value)) for pattern in (_DIGIT, _LOWER, _UPPER, _SYMBOL)]
    if kinds[0] and (kinds[1] or kinds[2]):
        return True
    return len(value) >= 10 and sum(kinds) >= 2


def _is_code(value: str, after: str, name: str) -> bool:
    """Whether a bare value (followed by the character ``after``) is code rather than a secret:
    a literal, a keyword, a small number, a ``$VARIABLE``, the variable the name is named after
    (``key=key``, ``self.token = token``), a call or subscript, ``self.x``, a short lowercase
    name that closes a call (``sorted(xs, key=len)``) or an argument that is an attribute
    (``OpenAI(api_key=settings.api_key)``)."""
    if value.lower() in _LITERALS or value in _KEYWORDS or _NUMBER.fullmatch(value) or _VARIABLE.fullmatch(value):
        return True
    segment = _NAME_SEGMENT.search(name)
    if segment and value == segment.group():
        return True
    if _IDENTIFIER_PATH.fullmatch(value) and (after in ("(", "[") or value.startswith(("self.", "cls."))):
        return True
    if after == ")" and _SHORT_NAME.fullmatch(value):
        return True
    return after in (")", ",") and _ATTRIBUTE.fullmatch(value) is not None


class _Value:
    """Where the value after a name and its separator is: ``start``/``end`` of what may be
    masked, ``scan_end`` where the scan resumes; ``quoted``, ``scheme`` (an auth scheme before
    it) and ``formatted`` (an f-string with a placeholder: code) say what it is."""

    __slots__ = ("end", "formatted", "quoted", "scan_end", "scheme", "start")

    def __init__(
        self,
        start: int,
        end: int,
        scan_end: int,
        *,
        quoted: bool = False,
        scheme: bool = False,
        formatted: bool = False,
    ) -> None:
        self.start, self.end, self.scan_end = start, end, scan_end
        self.quoted, self.scheme, self.formatted = quoted, scheme, formatted


def _find_value(text: str, position: int, bare: re.Pattern[str], *, schemes: bool) -> _Value | None:
    quoted = _QUOTED.match(text, position)
    if quoted:
        return _Value(quoted.start("inner"), quoted.end("inner"), quoted.end(), quoted=True)
    opening = _OPEN_QUOTE.match(text, position)
    if opening:  # a quote never closed (a message cut short): the rest of its line
        end = _LINE_END.search(text, opening.end())
        stop = end.start() if end else len(text)
        return _Value(opening.end(), stop, stop, quoted=True) if stop > opening.end() else None
    scheme = _AUTH_SCHEME.match(text, position) if schemes else None
    found = bare.match(text, scheme.end() if scheme else position)
    if not found or found.start() == found.end():
        return None
    if _STRING_PREFIX.fullmatch(found.group()) and (string := _QUOTED.match(text, found.end())):
        formatted = "f" in found.group().lower() and "{" in string.group("inner")
        return _Value(string.start("inner"), string.end("inner"), string.end(), quoted=True, formatted=formatted)
    return _Value(found.start(), found.end(), found.end(), scheme=scheme is not None)


def _is_secret(text: str, found: _Value, *, name: str, strength: int, where: str) -> bool:
    """Whether the value ``found`` after ``name`` (whose words are this ``strength``) is a
    secret. ``where`` it is: ``url`` (a query: every value counts), ``flag`` (a command line:
    every value but a ``$VARIABLE``, a literal, or a number under an ambiguous name), ``code``
    (``name=value``) or ``field`` (``name: value``): code is no secret, and under an ambiguous
    name only what looks like a credential is."""
    value = text[found.start : found.end]
    if _is_mask(value) or found.formatted:
        return False
    if found.scheme or where == "url":
        return True
    if where == "flag":
        return found.quoted or not (
            value.lower() in _LITERALS or _VARIABLE.fullmatch(value) or (strength == WEAK and _NUMBER.fullmatch(value))
        )
    if not found.quoted:
        if _is_code(value, text[found.end : found.end + 1], name):
            return False
        if where == "field" and strength == STRONG and value in _CODE_WORDS:
            return False
    return strength == STRONG or _looks_like_credential(value)


# ``name: value``: an HTTP header, a JSON / YAML / dict field (the name perhaps quoted).
_FIELD = re.compile(
    r"(?<![\w.\-/@\\\[\]])(?P<open>(?:\\{0,3}[\"'])?)(?P<name>[A-Za-z_][\w.\-]{0,127})(?P=open)"
    r"[ \t]{0,16}:(?![:=])[ \t]{0,16}"
)
_FIELD_BARE = re.compile(r"[^\s,;\"'<>{}\[\]()]+")
_COOKIE_BARE = re.compile(r"[^\r\n\"'<>`]+")  # ``Cookie: a=1; b=2``: every cookie is one


def _redact_fields(text: str) -> str:
    spans: list[tuple[int, int]] = []
    done = 0
    for match in _FIELD.finditer(text):
        name = match.group("name")
        if match.start() < done or not (strength := _strength(name)[1]):
            continue
        bare = _COOKIE_BARE if name.lower().endswith(("cookie", "cookies")) else _FIELD_BARE
        found = _find_value(text, match.end(), bare, schemes=_takes_scheme(name))
        if found is None:
            continue
        done = found.scan_end
        if not found.quoted:  # a cookie line's trailing blanks
            found.end = found.start + len(text[found.start : found.end].rstrip())
        if _is_secret(text, found, name=name, strength=strength, where="field"):
            spans.append((found.start, found.end))
    return _masked(text, spans)


# ``name=value``: a URL query or fragment parameter (perhaps percent-encoded), ``KEY=value``,
# ``key = value``, a keyword argument, ``--flag=value``, ``environ["KEY"] = value``, and Ruby's
# or PHP's ``'password' => 'x'`` (a quoted value only: ``key => key.id`` is a JavaScript function).
_PARAMETER = re.compile(
    r"(?:(?<=%[0-9A-Fa-f]{2})|(?<=%25[0-9A-Fa-f]{2})|(?<![\w.\-\[\]]))(?P<dashes>--?(?=[A-Za-z_]))?"
    r"(?P<name>[A-Za-z_][\w.\-\[\]]{0,127})(?:\\{0,3}[\"']\]?)?"
    r"(?P<sep>[ \t]{0,16}(?::?=(?![=~>])|=>)[ \t]{0,16}|%(?:25)?3[Dd])"
)
_URL_BEFORE = re.compile(r"(?i)(?:[?&#;]|%(?:25)?(?:3F|26|23|3B))\Z")
_URL_BARE = re.compile(r"[^&;\s\"'<>`)\]}]+")
_ENCODED_URL_BARE = re.compile(r"(?:(?!%(?:25)?(?:26|23|20|22|27|3[CcEe]|3[Bb]))[^&;\s\"'<>`)\]}])+")
_FLAG_BARE = re.compile(r"[^\s\"'<>`]+")
_CODE_BARE = re.compile(r"(?:[^\s\"'<>`,;()\[\]{}&:]|:(?=\S))+")


def _redact_parameters(text: str) -> str:
    spans: list[tuple[int, int]] = []
    done = 0
    for match in _PARAMETER.finditer(text):
        name = match.group("name")
        if match.start() < done or not (strength := _strength(name)[0]):
            continue
        encoded = match.group("sep").startswith("%")
        in_url = encoded or _URL_BEFORE.search(text, max(0, match.start() - 5), match.start()) is not None
        where = "url" if in_url else "flag" if match.group("dashes") else "code"
        bare = {"url": _ENCODED_URL_BARE if encoded else _URL_BARE, "flag": _FLAG_BARE, "code": _CODE_BARE}[where]
        found = _find_value(text, match.end(), bare, schemes=not in_url and _takes_scheme(name))
        if found is None or (match.group("sep").strip().startswith("=>") and not found.quoted):
            continue
        done = found.scan_end
        if _is_secret(text, found, name=name, strength=strength, where=where):
            spans.append((found.start, found.end))
    return _masked(text, spans)


# ``--name value``: a command line's flag whose value follows it (``--auth-token x``).
_FLAG = re.compile(r"(?<![^\s\"'])--?(?P<name>[A-Za-z][\w\-]{1,63})[ \t]{1,16}(?=[^\s\-])")


def _redact_flags(text: str) -> str:
    spans: list[tuple[int, int]] = []
    done = 0
    for match in _FLAG.finditer(text):
        name = match.group("name")
        if match.start() < done or not (strength := _strength(name)[1]):
            continue
        found = _find_value(text, match.end(), _FLAG_BARE, schemes=False)
        if found is None:
            continue
        done = found.scan_end
        if _is_secret(text, found, name=name, strength=strength, where="flag"):
            spans.append((found.start, found.end))
    return _masked(text, spans)


# ``<password>value</password>`` (a namespace allowed) and a plist's
# ``<key>password</key><string>value</string>``.
_XML_ELEMENT = re.compile(
    r"<(?P<tag>[A-Za-z_][\w.\-]{0,63}(?::[A-Za-z_][\w.\-]{0,63})?)(?:[ \t\r\n][^<>]{0,1024})?>"
    r"(?P<value>[^<]+)</(?P=tag)[ \t\r\n]{0,16}>"
)
_PLIST_ENTRY = re.compile(
    r"<key>(?P<tag>[^<]{1,256})</key>[ \t\r\n]{0,256}<(?P<kind>string|data)>(?P<value>[^<]+)</(?P=kind)>"
)


def _element(match: re.Match[str]) -> str:
    strength = _strength(match.group("tag").rpartition(":")[2])[1]
    value = match.group("value").strip()
    if not strength or _is_mask(value) or (strength == WEAK and not _looks_like_credential(value)):
        return match.group()
    start, end = match.start("value") - match.start(), match.end("value") - match.start()
    inner = match.group("value")
    lead = len(inner) - len(inner.lstrip())
    trail = len(inner) - len(inner.rstrip())
    whole = match.group()
    return whole[: start + lead] + MASK + whole[end - trail :]


# ``~/.netrc``: ``machine host login bob password hunter2``.
_NETRC = re.compile(r"(?<![\w-])(?:login|account)[ \t]{1,16}\S{1,256}[ \t]{1,16}password[ \t]{1,16}(?P<value>\S+)")


def _netrc(match: re.Match[str]) -> str:
    if _is_mask(match.group("value")):
        return match.group()
    return match.group()[: match.start("value") - match.start()] + MASK


_BEARER = re.compile(r"(?i:\bbearer)(?P<sep>[ \t]{1,16}|%20|\+)(?P<token>[A-Za-z0-9\-._~+/]+=*)")
_PLAIN_WORD = re.compile(r"[a-z][a-z_]*|[A-Z]?[a-z]+")  # ``Bearer realm=...``, ``bearer token``


def _bearer(match: re.Match[str]) -> str:
    # ``Bearer realm="x"``, ``token_type=bearer expires_in=3600``: a word, no token.
    if match.group("sep").strip(" \t") == "" and _PLAIN_WORD.fullmatch(match.group("token").rstrip("=")):
        return match.group()
    return match.group()[: match.start("token") - match.start()] + MASK


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
    re.compile(r"(?<![A-Za-z0-9_\-:])((?:bot)?\d{5,16}:)[A-Za-z0-9_\-]{30,}"),  # Telegram bot token
    # Webhook URLs whose path is the credential.
    re.compile(r"(?i)(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9_\-/]+"),
    re.compile(r"(?i)((?:discord|discordapp)\.com/api/(?:v\d{1,3}/)?webhooks/\d{1,32}/)[A-Za-z0-9_\-]+"),
    re.compile(r"(?i)(\.webhook\.office\.com/webhookb2/|outlook\.office(?:365)?\.com/webhook/)[^\s?#\"'<>`]+"),
    re.compile(r"(?i)(hooks\.zapier\.com/hooks/catch/)[A-Za-z0-9_\-/]+"),
    re.compile(r"(?i)(maker\.ifttt\.com/trigger/[^\s/?#]{1,128}/with/key/)[A-Za-z0-9_\-]+"),
]
_PRIVATE_KEY = re.compile(
    r"(-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY[A-Z0-9 ]{0,20}-----)"
    r"(?:.*?(-----END[A-Z0-9 ]{0,40}PRIVATE KEY[A-Z0-9 ]{0,20}-----)|.*)",
    re.DOTALL,
)


def _keep_prefix(match: re.Match[str]) -> str:
    return match.group(1) + MASK


def _redact(text: str) -> str:
    if "PRIVATE KEY" in text:
        # A block cut short (a truncated message) is withheld to the end of the text.
        text = _PRIVATE_KEY.sub(lambda match: match.group(1) + MASK + (match.group(2) or ""), text)
    text = _redact_userinfo(text)
    if "%" in text:
        text = _redact_encoded_userinfo(text)
    if "@" in text:
        text = _redact_user_passwords(text)
    if "-" in text:
        text = _USER_FLAG.sub(_user_flag, text)
    if "</" in text:
        text = _PLIST_ENTRY.sub(_element, _XML_ELEMENT.sub(_element, text))
    if ":" in text:
        text = _redact_fields(text)
    if "=" in text or "%" in text:
        text = _redact_parameters(text)
    if "-" in text:
        text = _redact_flags(text)
    if "password" in text:
        text = _NETRC.sub(_netrc, text)
    text = _BEARER.sub(_bearer, text)
    for shape in _KEY_SHAPES:
        text = shape.sub(_keep_prefix, text)
    return text


def redact(text: str) -> str:
    """``text`` fit to show a person: every secret it carries replaced by ``***``.

    See the module's docstring for what counts as a secret. Idempotent; never raises (text it
    cannot check is withheld whole rather than shown).
    """
    try:
        shown = text if isinstance(text, str) else str(text)
        for _ in range(_ROUNDS):  # until no rule finds more (one round more than found any)
            again = _redact(shown)
            if again == shown:
                break
            shown = again
        return shown
    except Exception:  # a bug here must not show a secret, nor fail the caller
        return f"{MASK} (text withheld: it could not be checked for secrets)"
