"""Language codes and names as OpenAI's audio API uses them: a request names the language by its
ISO-639-1 code (``en``; corral also takes the English name), verbose_json reports its name
(``english``). The table is Whisper's 100 languages."""

from __future__ import annotations

_TABLE = """
    en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese pt:portuguese
    tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian id:indonesian hi:hindi fi:finnish
    vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay cs:czech ro:romanian da:danish hu:hungarian ta:tamil
    no:norwegian th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin mi:maori ml:malayalam cy:welsh
    sk:slovak te:telugu fa:persian lv:latvian bn:bengali sr:serbian az:azerbaijani sl:slovenian kn:kannada
    et:estonian mk:macedonian br:breton eu:basque is:icelandic hy:armenian ne:nepali mn:mongolian bs:bosnian
    kk:kazakh sq:albanian sw:swahili gl:galician mr:marathi pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba
    so:somali af:afrikaans oc:occitan ka:georgian be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic
    yi:yiddish lo:lao uz:uzbek fo:faroese ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk mt:maltese
    sa:sanskrit lb:luxembourgish my:myanmar bo:tibetan tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian
    ln:lingala ha:hausa ba:bashkir jw:javanese su:sundanese yue:cantonese
"""
NAMES: dict[str, str] = {code: name.replace("_", " ")
                         for code, _, name in (item.partition(":") for item in _TABLE.split())}
CODES: dict[str, str] = {name: code for code, name in NAMES.items()}


def language_code(language: str | None) -> str | None:
    """The code for a language given as a code or an English name (unknown ones as given, lower case)."""
    if language is None or not language.strip():
        return None
    text = language.strip().lower()
    return CODES.get(text, text)


def language_name(code: str | None) -> str | None:
    """The English name OpenAI reports for a code (the code itself when it is not in the table)."""
    return None if code is None else NAMES.get(code.lower(), code)
