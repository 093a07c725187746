"""Provider check: what a headshot service states and does, graded against the criteria of
``docs/PROVIDERS.md`` (shared docs), beside what its outputs and model file measurably leak.

- :mod:`.criteria`   the criteria table as a registry of typed records (and the stated claims)
- :mod:`.assessment` the versioned assessment YAML (pydantic; errors name the field path)
- :mod:`.evidence`   measured numbers from ``workbench audit``/``run``/``mia`` output or an export bundle
- :mod:`.grade`      per-criterion verdicts, blockers, ToS;DR letter grade, Mozilla-style warnings
- :mod:`.requests`   questions to send the provider and GDPR Art. 15 / 17 / 20 request letters
- :mod:`.html`       the self-contained ``provider.html``
- :mod:`.commands`   ``workbench provider template | assess | compare``

An assessment aid, not legal advice.
"""

NOT_LEGAL_ADVICE = ("This is an assessment aid, not legal advice: it grades what the provider states against "
                    "published criteria and shows what was measured; a lawyer or your data-protection "
                    "authority can tell you what the law requires in your case.")
