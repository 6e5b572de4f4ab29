"""Slack alerts: an incoming webhook, or a bot token and a channel (DESIGN §6, §8).

Messages name what happened and link to the run or asset in the Dagster UI; they never carry
field values (PII) and nothing here logs the webhook URL or the token (both are secrets).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import dagster as dg

log = logging.getLogger(__name__)

DEFAULT_UI_URL = "http://127.0.0.1:3000"
SLACK_API_URL = "https://slack.com/api/"
# Slack truncates a section block's text at 3,000 characters; keep well under it.
_MAX_TEXT = 2_900


class SlackDeliveryError(RuntimeError):
    """Slack refused or could not receive a message; the sensor retries on its next tick."""


@dataclass(frozen=True)
class Alert:
    """One alert, rendered the same way whichever transport sends it.

    Attributes:
        kind: what fired (``run_failure``, ``check_failure``, ``stale``, ``api_budget``).
        title: one line, e.g. ``Run failed: salesforce/current/opportunity``.
        details: short lines of facts (names, counts, ages); never field values.
        link: the UI page to open.
        link_text: the label of that link.
    """

    kind: str
    title: str
    details: Sequence[str] = field(default_factory=tuple)
    link: str = ""
    link_text: str = "Open in Dagster"

    _EMOJI = {
        "run_failure": ":red_circle:",
        "check_failure": ":x:",
        "stale": ":hourglass:",
        "api_budget": ":warning:",
    }

    def text(self) -> str:
        """The plain-text form (notifications, and clients that do not render blocks)."""
        lines = [f"{self._EMOJI.get(self.kind, ':bell:')} {self.title}", *self.details]
        if self.link:
            lines.append(f"<{self.link}|{self.link_text}>")
        return "\n".join(lines)[:_MAX_TEXT]

    def blocks(self) -> list[dict[str, Any]]:
        """Block Kit: a header line, the details, and a button to the UI page."""
        body = "\n".join([f"*{self.title}*", *self.details])[:_MAX_TEXT]
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": body}},
        ]
        if self.link:
            blocks.append(
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": self.link_text},
                            "url": self.link,
                        }
                    ],
                }
            )
        return blocks


class SlackAlerter(dg.ConfigurableResource):
    """Posts :class:`Alert` messages to Slack.

    Bind from the environment: ``SlackAlerter(webhook_url=dg.EnvVar("SLACK_WEBHOOK_URL"))``
    or with a bot: ``bot_token=dg.EnvVar("SLACK_BOT_TOKEN"), channel=dg.EnvVar("SLACK_CHANNEL")``.
    :func:`slack_alerter_from_env` does that and tolerates unset variables (alerts are then
    logged as not sent instead of failing the code location). The webhook wins when both are
    set.
    """

    webhook_url: str = ""
    bot_token: str = ""
    channel: str = ""
    ui_url: str = DEFAULT_UI_URL
    # Where the bot transport sends Web API calls; tests point it at a capture server.
    api_url: str = SLACK_API_URL
    timeout_s: int = 10

    @property
    def configured(self) -> bool:
        """Whether any transport is configured."""
        return bool(self.webhook_url or (self.bot_token and self.channel))

    def run_url(self, run_id: str) -> str:
        """The run's page in the Dagster UI."""
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}"

    def asset_url(self, key: dg.AssetKey, *, view: str = "") -> str:
        """The asset's page in the Dagster UI (``view="checks"`` opens its checks tab)."""
        path = "/".join(quote(part, safe="") for part in key.path)
        suffix = f"?view={view}" if view else ""
        return f"{self.ui_url.rstrip('/')}/assets/{path}{suffix}"

    def runs_url(self) -> str:
        """The runs list in the Dagster UI."""
        return f"{self.ui_url.rstrip('/')}/runs"

    def send(self, alert: Alert) -> bool:
        """Post one alert. False when Slack is not configured; raises if Slack refused it."""
        if not self.configured:
            log.warning("Slack is not configured; alert not sent: %s", alert.title)
            return False
        if self.webhook_url:
            self._send_webhook(alert)
        else:
            self._send_bot(alert)
        return True

    def _send_webhook(self, alert: Alert) -> None:
        from slack_sdk.webhook import WebhookClient

        client = WebhookClient(self.webhook_url, timeout=self.timeout_s)
        try:
            resp = client.send(text=alert.text(), blocks=alert.blocks())
        except OSError as exc:
            # The exception text can contain the URL (a secret): report its type only.
            raise SlackDeliveryError(f"Slack webhook unreachable ({type(exc).__name__})") from None
        if resp.status_code != 200:
            raise SlackDeliveryError(f"Slack webhook answered HTTP {resp.status_code}")

    def _send_bot(self, alert: Alert) -> None:
        from slack_sdk import WebClient
        from slack_sdk.errors import SlackApiError

        client = WebClient(token=self.bot_token, base_url=self.api_url, timeout=self.timeout_s)
        try:
            client.chat_postMessage(channel=self.channel, text=alert.text(), blocks=alert.blocks())
        except SlackApiError as exc:
            raise SlackDeliveryError(
                f"Slack chat.postMessage refused: {exc.response.get('error', 'unknown error')}"
            ) from None
        except OSError as exc:
            raise SlackDeliveryError(f"Slack API unreachable ({type(exc).__name__})") from None


def slack_alerter_from_env() -> SlackAlerter:
    """The alerter bound to ``SLACK_*`` and ``DAGSTER_UI_URL``, each optional.

    ``dg.EnvVar`` fails the code location when a variable is unset; Slack is optional locally,
    so unset variables fall back to empty strings (alerts logged, not sent).
    """
    import os

    def env(name: str, default: str = "") -> Any:
        return dg.EnvVar(name) if os.environ.get(name) else default

    return SlackAlerter(
        webhook_url=env("SLACK_WEBHOOK_URL"),
        bot_token=env("SLACK_BOT_TOKEN"),
        channel=env("SLACK_CHANNEL"),
        ui_url=os.environ.get("DAGSTER_UI_URL") or DEFAULT_UI_URL,
    )
