# A Bolt app as a Bolt user writes it (nothing of silo_router in it): the region "us" of the
# end-to-end cluster serves Slack with it (e2e_handlers.py mounts it; test_bolt_e2e.py drives it).
import os

from slack_bolt import App

app = App(
    token=os.environ.get("SLACK_BOT_TOKEN"),
    signing_secret=os.environ.get("SLACK_SIGNING_SECRET"),
)

FRUITS = ["apple", "apricot", "banana", "cherry"]


@app.action("bolt_approve")
def approve(ack, body, say, respond):
    ack()
    say(f"<@{body['user']['id']}> approved")
    respond("Only you can see this", replace_original=False)


@app.command("/bolt-deploy")
def deploy(ack, command, respond):
    ack(f"Deploying {command['text']}...")
    respond(f"Deployed {command['text']}", response_type="in_channel")


@app.options("bolt_pick")
def pick(ack, payload):
    typed = payload.get("value", "")
    ack(
        options=[
            {"text": {"type": "plain_text", "text": fruit}, "value": fruit}
            for fruit in FRUITS
            if fruit.startswith(typed)
        ]
    )


@app.view("bolt_form")
def submit(ack, view):
    title = view["state"]["values"]["title"]["title"]["value"]
    if len(title) < 5:
        ack(response_action="errors", errors={"title": "Use at least 5 characters"})
    else:
        ack()


def ack_report(ack):
    ack()


def build_report(command, client):
    client.chat_postMessage(channel=command["channel_id"], text=f"Report: {command['text']}")


app.command("/bolt-report")(ack=ack_report, lazy=[build_report])
