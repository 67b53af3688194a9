"""Pure-Python re-implementation of coco-caption's PTB tokenisation (no JVM).

coco-caption (pycocoevalcap 1.2) joins all captions with newlines, runs
``java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase``
on them, splits each output line on single spaces and drops the punctuation tokens in ``PUNCTUATIONS``.
This module emulates the JFlex lexer of CoreNLP 3.4.1 (longest match, ties to the earlier rule,
trailing context counted in the match length) for the token classes that occur in caption data:
words, clitics (``n't``, ``'s``, ``'re`` ...), assimilations (``gonna``, ``cannot``), quotes (LaTeX
style), brackets (``-LRB-`` ... which survive lower-casing as ``-lrb-`` and are therefore NOT removed),
ellipses, dashes, numbers, fractions (joined with a non-breaking space), phone numbers, dates,
abbreviations and acronyms (including the sentence-final period duplication, which looks at the
start of the NEXT caption exactly as the Java lexer does on the joined file), URLs, e-mails, Twitter
names and hashtags, smileys, currency normalisation, soft hyphens and SGML tags.

Plain captions (letters, clitics, single , ; : . ! ? after a word) take a bulk path over the joined text;
the others go through the rule-by-rule lexer. Verified identical to the jar on every caption of the real
caption files; adversarial concatenations without spaces (e.g. ``x:1/2`` glued to URLs) can still differ.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from itertools import accumulate

__all__ = ["PUNCTUATIONS", "ptb_tokenize", "ptb_tokenize_line"]

PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# ----------------------------------------------------------------------------------------------
# character classes (JFlex [:letter:] ~ unicode letters; JFlex %caseless does not touch classes)
# ----------------------------------------------------------------------------------------------
L = "(?:[^\\W\\d_\u00b2\u00b3\u00b9\u00bc-\u00be\u2070-\u209f\u2150-\u218f\u2460-\u24ff\u2776-\u2793]|\u00ad)"
D = r"\d"
AL = "[^\\W_\u00b2\u00b3\u00b9\u00bc-\u00be\u2070-\u209f\u2150-\u218f\u2460-\u24ff\u2776-\u2793]"  # letter or digit
SP = "[ \t\u00a0\u2000-\u200a\u3000]"
NL = "[\r\n\u2028\u2029\u000b\u000c\u0085]"
SPNL = f"(?:{SP}|{NL})"
APOS = "(?:['\u0092\u2019]|&apos;)"
APOSETC = f"(?:{APOS}|[`\u0091\u2018\u201b])"
UPPER = r"[A-Z\u00c0-\u00d6\u00d8-\u00de\u0391-\u03a9\u0410-\u042f]"

SGML = (
    r"<(?:[!?][A-Za-z\-][^>\r\n]*|/?[A-Za-z][A-Za-z0-9_:.\-]*(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.\-]*"
    r"(?:[ ]*=[ ]*(?:'[^'\r\n]*'|\"[^\"\r\n]*\"|[A-Za-z][A-Za-z0-9_:.\-]*))?))*[ ]*/?)>"
)
SENTEND = f"{SPNL}(?:{SPNL}|{UPPER}|{SGML})"
NUM = rf"(?:{D}*(?:[.,\u066b\u066c]{D}+)+|{D}+(?:[.:,\u00ad\u066b\u066c]{D}+)*)"
NUMBER = rf"[\-+]?{NUM}"
WORD = rf"{L}(?:{L}|{D})*(?:[.!?]{L}(?:{L}|{D})*)*"
REDAUX = rf"{APOS}(?i:[msd]|re|ve|ll)"
SWORD = r"[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*"
SREDAUX = rf"(?i:n){APOSETC}(?i:t)"
HYPHEN = "[-_\u058a\u2010\u2011]"
ACRO = r"(?:[A-Za-z](?:\.[A-Za-z])+|(?i:canada|sino|korean|eu|japan|non)-(?i:U\.S)|(?i:U\.S\.-(?:U\.K|U\.S\.S\.R)))"
ABMONTH = "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
ABDAYS = "mon|tue|tues|wed|thu|thurs|fri"
ABSTATE_CI = (
    "ala|ariz|calif|colo|conn|dak|fla|ga|ind|kans?|ky|md|mich|minn|mo|mont|neb|nev|okla|penn|tenn|va|vt|wisc?|wyo"
)
ABSTATE_CS = "Ark|Ill|Mass|Miss|Ore|Wash|Del|Pa|Tex"
ABBREV3 = r"(?:(?i:ca|figs?|prop|nos?|sect?s?|arts?|paras?|bldg|pp|op|approx|rs)|Pt)\."
ABCOMP = "inc|cos?|corp|pp?tys?|ltd|plc|bancorp|dept|bhd|assn|univ|intl|sys"
ABNUM = "prop|ph|tel|est|ext|sq|ft"
ABPTIT = r"(?:ed|ph)\.d|jr|sr|bros|blvd|rd|esq"
ABBREV1 = rf"(?:(?i:{ABPTIT}|{ABMONTH}|{ABDAYS}|{ABSTATE_CI}|{ABCOMP}|{ABNUM}|etc|al|seq|bldg)|{ABSTATE_CS})\."
ABTITLE = (
    "mr|mrs|ms|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|cpl|pvt|mt|capt|ste?"
    "|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det"
)
ABCOMP2 = "invt|elec|natl|m[ft]g"
ABBREV4 = rf"(?:{ACRO}|(?i:a\.k\.a|{ABTITLE}|vs|alex|wm|jos|cie|cf|treas|{ABCOMP2})|Miss|La|[A-Za-z])"
ACRONYM = rf"(?:{ACRO}|[A-Za-z])\."
ACRO_FOLLOW = (
    "About|According|Additionally|After|An|A|As|At|But|Earlier|He|Her|Here|However|If|In|It|Last|Many|More"
    r"|Mr\.|Ms\.|Now|Once|One|Other|Our|She|Since|So|Some|Such|That|The|Then|There|These|They|This|We|When"
    "|While|What|Yet|You"
)
APOWORD = (
    rf"{APOS}(?i:n){APOS}?|[lLdDjJ]{APOS}|(?i:dunkin|somethin|ol){APOS}|{APOS}(?i:em)"
    rf"|[A-HJ-XZn]{APOSETC}{L}{{2}}{L}*|{APOS}[2-9]0(?i:s)|{APOS}(?i:till?)"
    rf"|{L}{L}*[aeiouyAEIOUY]{APOSETC}[aeiouA-Z]{L}*|{APOS}(?i:cause)|(?i:cont'd\.?|nor'easter|c'mon|e'er"
    r"|s'mores|ev'ry|li'l|nat'l)"
)
THING = rf"(?:[dDoOlL]{APOSETC}{AL})?{AL}+(?:{HYPHEN}(?:[dDoOlL]{APOSETC}{AL})?{AL}+)*"
THINGA = r"[A-Z]+(?:(?:[+&]|(?i:&amp;))[A-Z]+)+"
THING3 = rf"{AL}+(?:-{L}+){{0,2}}(?:\\?/{AL}+(?:-{L}+){{0,2}}){{1,2}}"
HTHING = rf"{AL}(?:{AL}|[.,\u00ad])*(?:-(?:(?:{AL}|\u00ad)+|{ACRO}\.))+"
FULLURL = r"https?://[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-]"
LIKELYURL = (
    r"(?:(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+"
    r"(?:com|net|org|edu)))(?:/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?"
)
EMAIL = r"[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00a0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*[^ \t\n\f\r\"<>|(){}.,;:\u00a0]+"
TWITTER = rf"@[a-zA-Z_][a-zA-Z_0-9]*|#{L}+"
DATE = rf"{D}{{1,2}}[\-/]{D}{{1,2}}[\-/]{D}{{2,4}}"
FRAC = rf"(?:{D}{{1,4}}[\- \u00a0])?{D}{{1,4}}(?:\\?/|\u2044){D}{{1,4}}"
PHONE = r"(?:\([0-9]{3}\)[ \u00a0]?|[0-9]{3}[\- \u00a0.])[0-9]{3}[\- \u00a0.][0-9]{4}"
LDOTS = r"\.{3,5}|(?:\.[ \u00a0]){2,4}\.|[\u0085\u2026]"
QUOTES = (
    rf"''|{APOS}|[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb]{{1,2}}"
)
DBLQUOT = r"\"|&quot;"
ASIANSMILEY = (
    r"[\^x=~<>]\.\[\^x=~<>]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)"
    r"|\([\^x=~<>']-[\^x=~<>'`]\)"
)
SMILEY = r"[<>]?[:;=][\-o\*']?[\(\)DPdpO\\{@\|\[\]]"
MISCSYMBOL = (
    "[\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00b3\u00b4-\u00ba\u00d7\u00f7\u0387\u05be\u05c0\u05c3"
    "\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e\u066a\u066d\u0703-\u070d\u07f6-\u07f8"
    "\u0964\u0965\u0e4f\u2020-\u2023\u2032-\u2038\u2044\u207a-\u207f\u208a-\u208e\u2100-\u214f\u2190-\u21ff"
    "\u2200-\u22ff\u2300-\u23ff\u2600-\u26ff\u2700-\u27bf\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
)



def _latex_quotes(tok: str, left: bool) -> str:
    if left:
        tok = re.sub(r"&apos;|'", "`", tok)
        tok = re.sub(r"\"|&quot;", "``", tok)
    else:
        tok = re.sub(r"&apos;|'", "'", tok)
        tok = re.sub(r"\"|&quot;", "''", tok)
    tok = re.sub("[\u0091\u2018\u201b\u2039]", "`", tok)
    tok = re.sub("[\u0092\u2019\u203a]", "'", tok)
    tok = re.sub("[\u0093\u201c\u00ab]", "``", tok)
    return re.sub("[\u0094\u201d\u00bb]", "''", tok)


def _currency(tok: str) -> str:
    tok = tok.replace("\u00a2", "cents").replace("\u00a3", "#")
    return re.sub("[\u0080\u00a4\u20a0\u20ac]", "$", tok)


_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3"}


def _keep(head: str) -> list[str]:
    return [head]


def _nosoft(head: str) -> list[str]:
    return [head.replace("\u00ad", "")]


def _push(n: int):
    def act(head: str) -> list[str]:
        return [head[:-n], head[-n:]]

    return act


def _acronym(head: str) -> list[str]:
    if len(head) == 2:
        return [head[:1], "."]
    return [head, "."]


def _space_nbsp(head: str) -> list[str]:
    return [head.replace(" ", "\u00a0")]


def _phone(head: str) -> list[str]:
    return [head.replace(" ", "\u00a0").replace("(", "-LRB-").replace(")", "-RRB-")]


def _hyphens(head: str) -> list[str]:
    return ["--"] if 3 <= len(head) <= 4 else [head]


def _smiley(head: str) -> list[str]:
    return [head.replace("(", "-LRB-").replace(")", "-RRB-")]


# (pattern of the token, pattern of the trailing context or None, action). Order = JFlex rule order.
_RULES_SPEC: list[tuple[str, str | None, object]] = [
    (r"(?i:cannot)", None, _push(3)),
    (r"(?i:'twas)", None, _push(3)),
    (rf"(?:{APOS}(?i:tis)|(?i:gonna|gotta|lemme|gimme|wanna))", None, _push(2)),
    (SGML, None, _space_nbsp),
    ("&(?:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", None, lambda h: ["--"]),
    (r"(?i:&amp;)", None, lambda h: ["&"]),
    (r"&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);", None, _keep),
    (WORD, REDAUX, _nosoft),
    (SWORD, SREDAUX, _nosoft),
    (WORD, None, _nosoft),
    (APOWORD, None, lambda h: [_latex_quotes(h, False)]),
    (rf"(?i:y){APOS}", L, _keep),
    (FULLURL, None, _keep),
    (LIKELYURL, None, _keep),
    (EMAIL, None, _keep),
    (TWITTER, None, _keep),
    (REDAUX, r"[^\W\d_]", None),  # placeholder replaced below (negated context)
    (DATE, None, _keep),
    (NUMBER, None, _nosoft),
    ("[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)", None, _keep),
    (FRAC, None, _space_nbsp),
    ("[\u00bc\u00bd\u00be\u2153-\u215e]", None, lambda h: [_FRACTIONS.get(h, h)]),
    (rf"-(?i:RRB|LRB|RCB|LCB|RSB|LSB)-|(?i:C\.D\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls)"
     rf"|(?i:cap){APOS}(?i:n)|(?i:c){APOS}(?i:est)", None, lambda h: [re.sub("(?i:&amp;)", "&", h)]),
    (r"(?i:c\+\+|[cf]#)", None, _keep),
    (SMILEY, r"[^A-Za-z0-9]", _smiley),
    (ASIANSMILEY, None, _smiley),
    (THING3, None, _keep),
    (r"(?:[A-Z]*\$|#)", None, _keep),
    ("[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]", None,
     lambda h: [_currency(h)]),
    (ACRONYM, rf"{SPNL}+(?:{ACRO_FOLLOW})(?:{SPNL}|[?!])", _acronym),
    (ABBREV3, rf"{SPNL}?{D}", _keep),
    (ABBREV1, SENTEND, lambda h: [h, "."]),
    (ABBREV1, r"[\s\S][\s\S]", _keep),
    (ABBREV1, None, lambda h: [h, "."]),
    (rf"{ABBREV4}\.", None, _keep),
    (ABBREV4, SP, _keep),
    (ACRO, SPNL, _keep),
    (rf"{APOS}[0-9][0-9]", SPNL, _keep),
    (rf"{WORD}\.", "[,;:]", _nosoft),
    (PHONE, None, _phone),
    (DBLQUOT, r"[A-Za-z0-9$]", lambda h: [_latex_quotes(h, True)]),
    (DBLQUOT, None, lambda h: [_latex_quotes(h, False)]),
    (r"\+", None, _keep),
    ("[%&\u2030\u2031]", None, _keep),
    (r"~|\^", None, _keep),
    (r"\||\\", None, _keep),
    (r"[<\[]|&lt;", None, lambda h: ["-LSB-" if h == "[" else "<"]),
    (r"[>\]]|&gt;", None, lambda h: ["-RSB-" if h == "]" else ">"]),
    (r"\{", None, lambda h: ["-LCB-"]),
    (r"\}", None, lambda h: ["-RCB-"]),
    (r"\(", None, lambda h: ["-LRB-"]),
    (r"\)", None, lambda h: ["-RRB-"]),
    (r"-+", None, _hyphens),
    (LDOTS, None, lambda h: ["..."]),
    (r"@+|#+|_+", None, _keep),
    (r"\*+|(?:\\\*){1,3}", None, _keep),
    (r"[,;:]", None, _keep),
    (r"[?!]+", None, _keep),
    ("[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa]", None, _keep),
    (r"=", None, _keep),
    (r"/", None, _keep),
    (rf"{HTHING}\.", "[,;:]", _nosoft),
    (HTHING, None, _nosoft),
    (rf"{THING}\.", "[,;:]", _keep),
    (THING, None, _keep),
    (rf"{THINGA}\.", "[,;:]", lambda h: [re.sub("(?i:&amp;)", "&", h)]),
    (THINGA, None, lambda h: [re.sub("(?i:&amp;)", "&", h)]),
    ("'", "[A-Za-z][^ \t\n\r\u00a0]", lambda h: [_latex_quotes(h, True)]),
    (REDAUX, None, lambda h: [_latex_quotes(h, False)]),
    (QUOTES, None, lambda h: [_latex_quotes(h, False)]),
    (MISCSYMBOL, None, _keep),
]


def _compile_rules() -> list[tuple[re.Pattern, object]]:
    rules = []
    for head, ctx, action in _RULES_SPEC:
        if action is None:  # REDAUX/[^alpha] and SREDAUX/[^alpha]: apostrophe stays a right quote
            for h in (REDAUX, SREDAUX):
                rules.append((re.compile(f"({h})(?:(?!{L})[\\s\\S])"), lambda t: [_latex_quotes(t, False)]))
            continue
        pat = f"({head})" + (f"(?:{ctx})" if ctx else "")
        rules.append((re.compile(pat), action))
    return rules


_RULES = _compile_rules()
_SKIP = re.compile(f"(?:{SP}|{NL}|[\u200b\u200e\u200f\ufeff\x00]|&nbsp;)+")
# letters-only word; safe fast path when the next character cannot extend any rule
_ABBREV_WORDS = frozenset(
    w.lower()
    for group in (ABMONTH, ABDAYS, ABSTATE_CI, ABSTATE_CS, ABTITLE, ABCOMP2, "jr|sr|bros|blvd|rd|esq|etc|al|seq|bldg",
                  "nos|no|prop|ph|tel|est|ext|sq|ft|inc|cos|co|corp|pty|ptys|ppty|pptys|ltd|plc|bancorp|dept|bhd|assn"
                  "|univ|intl|sys|vs|alex|wm|jos|cie|cf|treas|miss|kan|kans|wis|wisc|st|ste|dr|drs|sen|sens|rep|reps"
                  "|atty|attys|gov|govs|sup|supt|supts|prof|profs|comdr|cmdr|mfg|mtg|so|ca|fig|figs|sec|sect|sects"
                  "|art|arts|para|paras|pp|op|approx|pt|rs|d|u|la")
    for w in group.split("|")
)
_SPECIAL = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna", "dunno"])


_CHUNK_END = re.compile(r"\S*")
_SPACE_RUN = re.compile(" {2,}")
_LOOK_FAR = frozenset("0123456789(<.")
# the fast paths above, as one pattern: spaces | plain word | word before a final period | , ; : or a lone period |
# word + clitic | word + n't (the group that matched last names the case)
_FAST_ALL = re.compile(
    r"(?P<s>[ \t]+)"
    r"|(?P<w>[A-Za-z]+)(?=[ \n]|$|[,;:)](?:[ \n]|$))"
    r"|(?P<d>[A-Za-z]{2,})(?=\.(?:[ \n]|$))"
    r"|(?P<p>[,;:](?=[ \n]|$)|\.(?=\n|$|[ ][^.]))"
    r"|(?P<c1>[A-Za-z]{2,})(?P<c2>'(?:s|re|ve|ll|m|d))(?=[ \n]|$)"
    r"|(?P<n1>[A-Za-z]*[A-MO-Za-mo-z])(?P<n2>n't)(?=[ \n]|$)"
)
_SPACES = re.compile(r"\s*")


def _scan(text: str, start: int, end: int, cache: dict) -> list[str]:
    """Tokens of text[start:end]; text may continue past end (lookahead into the next line)."""
    out: list[str] = []
    pos = start
    while pos < end:
        m = _FAST_ALL.match(text, pos)
        if m is not None and m.end() <= end:
            kind = m.lastgroup
            if kind == "s":
                pos = m.end()
                continue
            if kind == "p":
                out.append(m.group())
                pos = m.end()
                continue
            if kind == "w" or kind == "d":
                w = m.group()
                lw = w.lower()
                if lw not in _SPECIAL and (kind == "w" or lw not in _ABBREV_WORDS):
                    out.append(w)
                    pos = m.end()
                    continue
            elif kind == "c2" or kind == "n2":
                a, b = (m.group("c1"), m.group("c2")) if kind == "c2" else (m.group("n1"), m.group("n2"))
                if a.lower() not in _SPECIAL:
                    out.append(a)
                    out.append(b)
                    pos = m.end()
                    continue
        elif m is None:
            m = _SKIP.match(text, pos)
            if m:
                pos = m.end()
                continue
        # the longest match only depends on the rest of this chunk and a little lookahead after it
        chunk_end = _CHUNK_END.match(text, pos).end()
        if text[pos] in _LOOK_FAR or "." in text[pos:chunk_end]:
            # fractions, phone numbers, spaced ellipses and the abbreviation/acronym rules see past the space
            key = text[pos:_SPACES.match(text, chunk_end).end() + 16]
        else:  # every other rule decides within the chunk plus one character
            key = text[pos:chunk_end + 1]
        hit = cache.get(key) if text[pos] != "<" else None
        if hit is None:
            best_len, best = 0, None
            for rx, action in _RULES:
                m = rx.match(text, pos)
                if m is not None:
                    n = m.end() - pos
                    if n > best_len:
                        best_len, best = n, (m.group(1), action)
            hit = best if best is not None else ("", None)
            cache[key] = hit
        if hit[1] is None:  # untokenizable character: deleted (firstDelete)
            pos += 1
            continue
        head, action = hit
        toks = action(head)
        if len(toks) == 2 and toks[0] + toks[1] == head and action is not _acronym:
            # pushback: emit the first part, rescan the rest
            out.append(toks[0])
            pos += len(toks[0])
            continue
        if action is _acronym or (len(toks) == 2 and toks[1] == "." and head.endswith(".")):
            out.append(toks[0])
            pos += len(head) - 1  # the period is rescanned and returned next time
            continue
        out.extend(t for t in toks if t)
        pos += len(head)
    return out


_CLITIC = r"'(?:s|re|ve|ll|m|d)"
_SIMPLE_LINE = re.compile(rf" *(?:[A-Za-z]+(?:n't|{_CLITIC})?(?:[,;:](?= )|(?= )|\.(?= *$)| *$) *)*")
_SIMPLE_CLITIC = re.compile(rf"(n't|{_CLITIC})")
# plain lines that still need the lexer: clitics after one letter or after n, upper-case clitics
_SIMPLE_APOS_EXCLUDE = re.compile(r"(?<![A-Za-z])[A-Za-z](?:'|n't)|nn't|N't|n'T|'(?:S|RE|VE|LL|M|D|Re|Ve|Ll)\b")


_PUNCT_TO_SPACE = str.maketrans({",": " ", ";": " ", ":": " ", ".": " ", "!": " ", "?": " "})
_PUNCT_SPLIT = str.maketrans({",": " , ", ";": " ; ", ":": " : ", ".": " . "})


def _simple(line: str, drop_punctuation: bool) -> str | None:
    """Output of a plain line (letters, clitics, commas, a final period), or None if the lexer is needed."""
    if not _SIMPLE_LINE.fullmatch(line):
        return None
    low = line.lower()
    for word in _SPECIAL:  # assimilations (gonna, cannot, ...) are split by the lexer
        if word in low:
            return None
    stripped = low.rstrip()
    if stripped.endswith("."):
        last = stripped[:-1].rsplit(" ", 1)[-1]
        if len(last) < 2 or last in _ABBREV_WORDS:
            return None
    if "'" in line:
        if _SIMPLE_APOS_EXCLUDE.search(line):
            return None
        low = _SIMPLE_CLITIC.sub(r" \1", low)
    return " ".join(low.translate(_PUNCT_TO_SPACE if drop_punctuation else _PUNCT_SPLIT).split())


def ptb_tokenize_line(line: str, following: str | None = None, cache: dict | None = None) -> str:
    """One caption -> the Java tokenizer's lower-cased output line (punctuation NOT yet removed).

    ``following`` is the next caption of the same tokenizer call (None for the last one): the Java
    lexer sees the captions joined by newlines, and its sentence-end rules look past the line end.
    """
    line = _NEWLINES.sub(" ", line)
    simple = _simple(line, False)
    if simple is not None:
        return simple
    text = line if following is None else line + "\n" + _NEWLINES.sub(" ", following[:64])
    return " ".join(_scan(text, 0, len(line), {} if cache is None else cache)).lower()


_NEWLINES = re.compile("[\r\n\u2028\u2029\u000b\u000c\u0085]")


def _filter(tokenized: str) -> str:
    return " ".join(w for w in tokenized.rstrip().split(" ") if w not in PUNCTUATIONS)


# A "plain" line holds only letters, spaces, lower-case clitics ('s 're 've 'll 'm 'd n't), single , ; : . ! ?
# before a space or the line end, "&" between spaces, hyphens inside words (x-ray) and free-standing dashes
# (- -- --- ----). For those the lexer's output is known: split off the
# clitics and the punctuation. These patterns find the lines that are NOT plain.
# (Each pattern starts with a literal or a class so that the regex engine can scan fast; the text they run on
# starts with a newline, so "^" is written "\n".)
_NOT_PLAIN = [
    re.compile(r"[^A-Za-z ,;:.!?'&\n-]"),
    re.compile(r"[,;:.!?](?![ \n]|\Z)"),
    re.compile(r"&(?![ \n]|\Z)|&(?<=[^ \n]&)"),
    re.compile(r"'(?!(?:s|re|ve|ll|m|d|t)(?![A-Za-z]))"),
    re.compile(r"'(?<=[^A-Za-z][A-Za-z]')"),
    re.compile(r"\n[A-Za-z]?'"),
    re.compile(r"'t(?<![A-Za-z]n't)"),
    re.compile(r"nn't"),
]
# abbreviations (and single letters) before a period, found on the reversed text so the pattern starts with "."
_REVERSED_WORD_BEFORE_PERIOD = re.compile(r"\.([a-z]{1,7})(?![a-z])")
_REVERSED_ABBREV = frozenset(w[::-1] for w in _ABBREV_WORDS) | frozenset("abcdefghijklmnopqrstuvwxyz")


def ptb_tokenize(captions: Iterable[str]) -> list[str]:
    """Tokenise captions exactly as pycocoevalcap's PTBTokenizer does when given them in this order."""
    caps = [c.replace("\n", " ") for c in captions]
    n = len(caps)
    if n == 0:
        return []
    text = "\n".join(caps)
    low = text.lower()
    starts = list(accumulate((len(c) + 1 for c in caps[:-1]), initial=0))
    # lower() can change lengths (e.g. U+0130): positions in `low` need their own line starts
    starts_low = starts if len(low) == len(text) else list(
        accumulate((len(c) + 1 for c in low.split("\n")[:-1]), initial=0))
    needs_lexer = set()

    def mark(rx: re.Pattern, src: str) -> None:
        for m in rx.finditer(src):
            needs_lexer.add(bisect_right(starts_low, m.start()) - 1)

    for word in _SPECIAL:  # assimilations: gonna -> gon na, cannot -> can not (str.find: faster than a regex)
        p = low.find(word)
        while p != -1:
            needs_lexer.add(bisect_right(starts_low, p) - 1)
            p = low.find(word, p + 1)
    p = text.find("-")
    while p != -1:  # hyphens: one inside a word, or a free-standing run of 1-4 (all dropped as punctuation)
        q = p
        while q < len(text) and text[q] == "-":
            q += 1
        before, after = text[p - 1:p] if p else "", text[q:q + 1]
        inside = q - p == 1 and before.isascii() and before.isalpha() and after.isascii() and after.isalpha()
        alone = q - p <= 4 and before in ("", " ", "\n") and after in ("", " ", "\n")
        if not (inside or alone):
            needs_lexer.add(bisect_right(starts, p) - 1)
        p = text.find("-", q)
    nl_text = "\n" + text
    for rx in _NOT_PLAIN:
        for m in rx.finditer(nl_text):
            needs_lexer.add(bisect_right(starts, max(m.start() - 1, 0)) - 1)
    # a period after an abbreviation or a single letter can stay attached or be doubled
    rev = low[::-1]
    abbrev = _REVERSED_ABBREV.intersection(_REVERSED_WORD_BEFORE_PERIOD.findall(rev))
    if abbrev:
        rx = re.compile(r"\.(?:" + "|".join(sorted(abbrev, key=len, reverse=True)) + r")(?![a-z])")
        last = len(low) - 1
        for m in rx.finditer(rev):
            needs_lexer.add(bisect_right(starts_low, last - m.start()) - 1)
    if "'" in low:
        low = _SIMPLE_CLITIC.sub(r" \1", low)
    for ch in ",;:.!?":  # (str.replace: str.translate is slow on non-ASCII text)
        low = low.replace(ch, " ")
    # collapse spaces in bulk: single spaces between tokens, none at line ends
    low = _SPACE_RUN.sub(" ", low).replace(" \n", "\n").replace("\n ", "\n").strip(" ")
    out = low.split("\n")
    if len(out) != n:  # a caption with other line separators (\r, U+2028 ...): lexer only
        out, needs_lexer = [""] * n, set(range(n))
    elif "-" in low:  # free-standing dashes of plain lines are dropped punctuation
        starts_out = list(accumulate((len(f) + 1 for f in out[:-1]), initial=0))
        lines_with_dashes = set()
        p = low.find("-")
        while p != -1:
            q = p
            while q < len(low) and low[q] == "-":
                q += 1
            if (p == 0 or low[p - 1] in " \n") and (q == len(low) or low[q] in " \n"):
                lines_with_dashes.add(bisect_right(starts_out, p) - 1)
            p = low.find("-", q)
        for i in lines_with_dashes:
            out[i] = " ".join(t for t in out[i].split(" ") if t.strip("-"))
    cache: dict = {}  # lexer decisions, per call
    for i in sorted(needs_lexer):
        # the Java lexer sees the captions joined by newlines: its sentence-end rules look ahead
        following = "\n".join(caps[i + 1:i + 5])[:64] if i + 1 < n else None
        out[i] = _filter(ptb_tokenize_line(caps[i], following, cache))
    return out
