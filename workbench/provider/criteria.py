"""The criteria a headshot provider is judged by: the table of ``docs/PROVIDERS.md`` as a registry.

Each :class:`Criterion` says what a good provider does (``good``), what kind of answer it takes
(``yes_no``: yes/no; ``days``: a number of days, or ``no`` for "no published period"; ``text``: a value such
as a region or a transfer mechanism, or ``no``), which answer meets it, the source (law, regulator or rating
scheme) it comes from, the Mozilla *Privacy Not Included*-style domain its warning belongs to, the question
to send the provider when the answer is unknown or falls short, and, for the five blockers of issue #15, the
blocker a bad answer raises (a blocker caps the ToS;DR grade at D, :mod:`workbench.provider.grade`).

:data:`CLAIMS` are statements a provider may make about its own model and outputs that the workbench can
check by measurement (EDPB Opinion 28/2024: a model trained on personal data is anonymous only if extracting
personal data from it is insignificant).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["yes_no", "days", "text"]
Domain = Literal["data use", "control", "security", "AI", "track record"]
DOMAINS: tuple[Domain, ...] = ("data use", "control", "security", "AI", "track record")
KIND_HINT = {"yes_no": "yes | no | unknown", "days": "a number of days | no (no published period) | unknown",
             "text": "a value (e.g. a region or mechanism) | no | unknown"}


@dataclass(frozen=True)
class Criterion:
    id: str
    good: str               # what a good provider does (PROVIDERS.md "a good provider")
    kind: Kind
    source: str             # the article, law or rating scheme it comes from
    domain: Domain          # Mozilla-style warning domain
    question: str           # what to ask the provider when the answer is unknown or falls short
    check: str              # how to check it yourself (PROVIDERS.md "how to check")
    good_answer: str = "yes"       # yes_no: the answer that meets the criterion
    max_days: int | None = None    # days: the longest period that still meets it
    blocker: str | None = None     # a bad answer is this blocker (caps the grade), else a bad point


CRITERIA: dict[str, Criterion] = {}


def register(c: Criterion) -> Criterion:
    CRITERIA[c.id] = c
    return c


# Retention ceiling: Texas Bus. & Com. Code 503.001(c)(3) allows at most one year after the purpose ends
# (BIPA 740 ILCS 14/15(a): at most three years); a longer period, or none, falls short.
YEAR = 365
_RETENTION = ("GDPR Art. 5(1)(e), 13(2)(a); Illinois BIPA 740 ILCS 14/15(a); "
              "Texas Bus. & Com. Code 503.001(c)(3)")

for _c in (
    Criterion("photo_retention_days", "a fixed number of days after delivery, published", "days", _RETENTION,
              "control", "How many days after delivery do you delete the photos I upload, and where is that "
              "period published?", "policy text; re-fetch an image URL after the deadline; an Art. 15 request "
              "after it", max_days=YEAR),
    Criterion("model_retention_days", "its own published period for the personalised model file", "days",
              _RETENTION + "; EDPB Opinion 28/2024; FTC orders Everalbum (2021) and WW/Kurbo (2022)", "AI",
              "How many days do you keep the personalised model (LoRA, embedding or checkpoint) trained on my "
              "photos, and do you delete it on request?", "the workbench's leakage of the model file says "
              "whether keeping it keeps personal data", max_days=YEAR,
              blocker="no erasure of the model file: it is kept with no published period"),
    Criterion("output_retention_days", "a published period for generated headshots", "days", "GDPR Art. 5(1)(e)",
              "control", "How many days do you keep the headshots generated for me?", "policy text",
              max_days=YEAR),
    Criterion("erasure_on_request", "self-service erasure of photos, model and outputs", "yes_no",
              "GDPR Art. 17; Art. 12(3) (within one month, extendable by two)", "control",
              "Can I erase my photos, the model trained on them and the generated headshots myself, and how "
              "long does it take?", "time a request"),
    Criterion("erasure_confirmation", "a confirmation or receipt is sent", "yes_no",
              "GDPR Art. 5(2) accountability, 12(3)", "control",
              "Do you send a confirmation or receipt when my data, including the model file, has been erased?",
              "keep it; follow with an Art. 15 request"),
    Criterion("erasure_covers_processors", "deletion reaches GPU/storage processors", "yes_no",
              "GDPR Art. 28(3)(g), 19", "control", "Does erasure also delete the copies held by your GPU, "
              "storage and backup processors?", "sub-processor list; processor terms"),
    Criterion("explicit_biometric_consent", "a separate, withdrawable consent for face processing", "yes_no",
              "GDPR Art. 9(2)(a), 7(3), 4(14); BIPA 740 ILCS 14/15(b); CCPA/CPRA sensitive personal information",
              "data use", "Do you ask for a separate, explicit and withdrawable consent before processing my "
              "face, and can you send me the record of it?", "screenshot the consent flow; ask for the record",
              blocker="no explicit consent for face processing"),
    Criterion("sells_or_shares_likeness", "never sold, licensed or shared", "yes_no",
              "BIPA 740 ILCS 14/15(c); Texas Bus. & Com. Code 503.001(c)(1); CCPA §1798.121", "data use",
              "Do you sell, license or share my photos, my likeness or the model of my face with anyone?",
              "terms and privacy policy", good_answer="no",
              blocker="sells or licenses the person's likeness"),
    Criterion("trains_other_models", "customer photos never train shared or future models", "yes_no",
              "FTC, AI Companies: Uphold Your Privacy and Confidentiality Commitments (Jan 2024); "
              "GDPR Art. 5(1)(b)", "AI", "Are my photos, or models trained on them, used to train any shared or "
              "future model?", "terms; a canary-identity probe of the provider's base model", good_answer="no",
              blocker="customer faces train other models"),
    Criterion("perpetual_content_license", "no perpetual, irrevocable licence over uploads or likeness", "yes_no",
              "ToS;DR cases on content licences", "data use", "Do your terms give you a perpetual or irrevocable "
              "licence over my uploads or likeness, and does it end when I delete my account?", "terms",
              good_answer="no", blocker="perpetual licence over uploads"),
    Criterion("free_tier_same_terms", "free and paid users get the same data terms; no ads or brokers", "yes_no",
              "the seed's 'if a service is free, the product may be your data'; Common Sense Privacy 'Pass'",
              "data use", "Do free and paying users get the same data terms, with no advertising or data "
              "brokers?", "compare the terms of both tiers"),
    Criterion("storage_region", "named regions", "text", "GDPR Art. 13(1)(f)", "security",
              "In which countries or regions are my photos and model stored and processed?",
              "policy; hosting of upload and model endpoints (weak)"),
    Criterion("transfer_mechanism", "adequacy, SCCs or EU–US DPF for transfers out of the EEA", "text",
              "GDPR Art. 44–49; EU–US Data Privacy Framework adequacy decision (10 July 2023)", "security",
              "Which transfer mechanism (adequacy, SCCs, EU–US DPF) covers transfers of my data out of the EEA?",
              "DPF list; policy"),
    Criterion("subprocessors_listed", "a published list", "yes_no", "GDPR Art. 28(2), (4)", "security",
              "Where is your list of sub-processors (GPU, storage, payment, analytics)?",
              "compare with third-party domains seen during upload"),
    Criterion("encryption_at_rest", "encryption at rest and access control", "yes_no",
              "GDPR Art. 32(1)(a)–(d); Mozilla Privacy Not Included Minimum Security Standards", "security",
              "Are my photos and model encrypted at rest, and who can access them?", "security page; ask"),
    Criterion("security_contact", "a vulnerability-disclosure contact", "yes_no",
              "Mozilla Privacy Not Included Minimum Security Standards", "security",
              "Where do I report a security vulnerability (security.txt or a disclosure page)?",
              "security.txt or page"),
    Criterion("privacy_policy_states_retention", "plain-language policy covering purposes, retention, recipients, "
              "transfers, rights, contact", "yes_no", "GDPR Art. 12(1), 13, 14", "track record",
              "Where does your privacy policy state the purposes, retention periods, recipients, transfers, my "
              "rights and your contact?", "checklist against Art. 13"),
    Criterion("dpia", "has a DPIA and can share a summary", "yes_no",
              "GDPR Art. 35; WP248 (sensitive data + new technology)", "track record",
              "Have you carried out a data-protection impact assessment, and can you share a summary?", "ask"),
    Criterion("model_export", "the model file can be exported (portability)", "yes_no",
              "GDPR Art. 20 (data provided by the person); exporting the derived model is good practice", "control",
              "Can I download the personalised model file trained on my photos?",
              "export it; hash it; audit it with the workbench"),
    Criterion("ai_output_labelling", "generated images carry machine-readable AI marking", "yes_no",
              "EU AI Act Art. 50(2), applicable from 2 Aug 2026", "AI",
              "Do the generated headshots carry a machine-readable AI marking (C2PA, metadata or watermark)?",
              "check outputs for C2PA / metadata / watermark"),
    Criterion("answers_privacy_questions", "answers the person's privacy and security questions", "yes_no",
              "the seed ('ensure they can satisfactorily address any concerns')", "track record",
              "Who answers privacy and security questions, and within how many days?",
              "log the questions sent and the replies"),
):
    register(_c)

BLOCKER_IDS = tuple(cid for cid, c in CRITERIA.items() if c.blocker)


@dataclass(frozen=True)
class Claim:
    id: str
    text: str           # what the provider states
    source: str


CLAIMS: dict[str, Claim] = {c.id: c for c in (
    Claim("model_is_anonymous", "states that the personalised model is anonymous / not personal data",
          "EDPB Opinion 28/2024: anonymous only if extraction and inference of personal data are insignificant"),
    Claim("outputs_are_new_images", "states that outputs are new images, never copies of the uploaded photos",
          "Carlini et al., Extracting Training Data from Diffusion Models, USENIX Security 2023"),
)}


def criterion(cid: str) -> Criterion:
    """The criterion ``cid``; a KeyError names the valid ids."""
    try:
        return CRITERIA[cid]
    except KeyError:
        raise KeyError(f"unknown criterion id {cid!r}; valid ids: {', '.join(CRITERIA)}") from None
