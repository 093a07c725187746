"""What to send the provider: a question for every unknown answer and every shortfall, and ready-to-send
GDPR requests filled with the provider's name and today's date.

Choose a provider that can answer your privacy questions (the seed's advice): each :class:`Question`
names the criterion it comes from. The :data:`LETTERS` are

- **access** (GDPR Art. 15): what is held about the person, including the personalised model file, its
  purposes, recipients, transfers and retention;
- **erasure** (Art. 17) of the photos, the generated outputs **and the model file**, at processors too
  (Art. 19, 28(3)(g)), with written confirmation (Art. 5(2));
- **portability** (Art. 20) of the uploaded photos (and, as good practice, the model file).

A controller answers within one month of receipt, extendable by two further months where necessary
(Art. 12(3)); each letter states the date the answer is due. Each letter names the criteria it checks.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import asdict, dataclass

from workbench.provider.criteria import CRITERIA
from workbench.provider.grade import ProviderGrade

YOU = "[your name]"
ACCOUNT = "[the e-mail address of your account]"


@dataclass(frozen=True)
class Question:
    criterion: str
    why: str            # unknown, or the shortfall
    text: str
    source: str


def questions(result: ProviderGrade) -> list[Question]:
    """One question per criterion whose answer is unknown or falls short, naming the criterion."""
    out = []
    for r in result.criteria:
        if r.verdict == "meets":
            continue
        why = "unknown" if r.verdict == "unknown" else f"falls short: answered {r.answer!r}; a good provider: {r.good}"
        out.append(Question(r.id, why, f"[{r.id}] {CRITERIA[r.id].question}", r.source))
    return out


def one_month_after(day: dt.date) -> dt.date:
    """The same day next month (the month's last day where it has none): Art. 12(3)'s one month."""
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class LetterKind:
    id: str
    article: str
    subject: str
    criteria: tuple[str, ...]
    body: str           # {provider}, {due} are filled in


LETTERS: tuple[LetterKind, ...] = (
    LetterKind("access", "GDPR Art. 15", "Subject access request (GDPR Art. 15)",
               ("photo_retention_days", "model_retention_days", "output_retention_days", "sells_or_shares_likeness",
                "trains_other_models", "storage_region", "transfer_mechanism", "subprocessors_listed"),
               "Under Article 15 of the GDPR I ask {provider} to confirm whether you process personal data about "
               "me and, if so, to send me a copy of it, including:\n"
               "- the photos I uploaded, the headshots generated for me, and the personalised model file (LoRA, "
               "embedding or checkpoint) trained on my photos, which is personal data about me (EDPB Opinion "
               "28/2024);\n- the purposes of the processing and its legal basis, including my consent record "
               "for processing my face (Art. 9(2)(a));\n- the recipients and sub-processors, and whether my "
               "photos, likeness or model were sold, licensed, shared or used to train other models;\n"
               "- where the data is stored, and the safeguards for any transfer out of the EEA (Art. 46);\n"
               "- how long each of these is kept."),
    LetterKind("erasure", "GDPR Art. 17", "Request for erasure (GDPR Art. 17)",
               ("erasure_on_request", "erasure_confirmation", "erasure_covers_processors", "model_retention_days"),
               "Under Article 17 of the GDPR I withdraw my consent (Art. 7(3)) and ask {provider} to erase "
               "without undue delay all personal data about me, namely:\n"
               "1. the photos I uploaded, and every copy of them;\n2. the headshots and other outputs generated "
               "from them;\n3. the personalised model file trained on my photos (LoRA, embedding, checkpoint, "
               "optimizer state) and any copies or derivatives of it: a model that can reproduce my face is "
               "personal data (EDPB Opinion 28/2024);\n4. the copies held by your processors and in backups "
               "(Art. 19, 28(3)(g)).\nPlease confirm in writing which data you erased and when (Art. 5(2))."),
    LetterKind("portability", "GDPR Art. 20", "Request for data portability (GDPR Art. 20)",
               ("model_export",),
               "Under Article 20 of the GDPR I ask {provider} to send me the personal data I provided, namely the "
               "photos I uploaded, in a structured, commonly used and machine-readable format (the original "
               "image files). As good practice I also ask for the personalised model file trained on them, in "
               "its usual format (e.g. .safetensors)."),
)


@dataclass(frozen=True)
class Letter:
    kind: str
    article: str
    criteria: tuple[str, ...]
    due: str
    text: str


def letters(provider: str, today: dt.date | None = None) -> list[Letter]:
    """The access, erasure and portability requests, filled with ``provider`` and ``today``."""
    today = today or dt.date.today()
    due = one_month_after(today)
    out = []
    for k in LETTERS:
        text = (f"To: {provider} (data-protection officer / privacy contact)\nDate: {today.isoformat()}\n"
                f"Subject: {k.subject}\n\nDear {provider},\n\n{k.body.format(provider=provider)}\n\n"
                f"My account: {ACCOUNT}. Please reply within one month of receiving this request, that is by "
                f"{due.isoformat()} (GDPR Art. 12(3)); if you extend this period, tell me why within that month.\n\n"
                f"Yours sincerely,\n{YOU}\n\n(Reference: provider-check criteria {', '.join(k.criteria)})")
        out.append(Letter(k.id, k.article, k.criteria, due.isoformat(), text))
    return out


def to_dict(result: ProviderGrade, today: dt.date | None = None) -> dict:
    """``questions`` and ``requests`` for provider.json."""
    return {"questions": [asdict(q) for q in questions(result)],
            "requests": [asdict(x) for x in letters(result.provider, today)]}
