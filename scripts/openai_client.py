"""Drives an OpenAI-compatible router with the official `openai` client:
chat and completions, whole and streamed, usage when asked, the model
list, and the router's errors. Prints one line a check; exits 1 if any
fails. Run by scripts/openai_client.sh."""

import sys
import time

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
failures = 0


def check(name, ok, detail=""):
    global failures
    failures += 0 if ok else 1
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")


models = client.models.list()
check("models.list()", [m.id for m in models.data] == ["emulated"], str([m.id for m in models.data]))

messages = [{"role": "system", "content": "Answer briefly. " * 20},
            {"role": "user", "content": "Name a colour."}]
ids = set()
for _ in range(2):
    chat = client.chat.completions.create(model="emulated", messages=messages, max_tokens=6)
    ids.add(chat.id)
check("chat: id, created, role, usage",
      chat.id.startswith("chatcmpl-") and abs(chat.created - time.time()) < 60
      and chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens == 6,
      f"id={chat.id} created={chat.created} usage={chat.usage.model_dump()}")
check("chat: ids differ between requests", len(ids) == 2)

chunks = list(client.chat.completions.create(model="emulated", messages=messages, max_tokens=6, stream=True))
check("chat stream: one id, role first, no usage unasked",
      len({c.id for c in chunks}) == 1 and chunks[0].choices[0].delta.role == "assistant"
      and all(c.usage is None for c in chunks),
      f"{len(chunks)} chunks, text={''.join(c.choices[0].delta.content or '' for c in chunks if c.choices)!r}")

chunks = list(client.chat.completions.create(model="emulated", messages=messages, max_tokens=6, stream=True,
                                             stream_options={"include_usage": True}))
usage = chunks[-1].usage
check("chat stream: usage chunk when asked",
      usage is not None and usage.prompt_tokens_details is not None
      and usage.prompt_tokens_details.cached_tokens is not None,
      f"usage={usage.model_dump() if usage else None}")

completion = client.completions.create(model="emulated", prompt="Once upon a time", max_tokens=4)
check("completion: id, created, text, usage",
      completion.id.startswith("cmpl-") and completion.created > 0
      and isinstance(completion.choices[0].text, str) and completion.usage.completion_tokens == 4,
      f"id={completion.id} text={completion.choices[0].text!r}")

chunks = list(client.completions.create(model="emulated", prompt="Once upon a time", max_tokens=4, stream=True,
                                        stream_options={"include_usage": True}))
check("completion stream: text chunks then usage",
      sum(1 for c in chunks if c.choices) == 4 and chunks[-1].usage is not None,
      f"{len(chunks)} chunks")

try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    check("unknown model: 404", False, "no error")
except openai.NotFoundError as e:
    check("unknown model: 404 NotFoundError", e.body.get("code") == "model_not_found" and "type" in e.body,
          str(e.body))

try:
    client.completions.create(model="emulated", prompt="x" * 200_000, max_tokens=1)
    check("oversized body: 413", False, "no error")
except openai.APIStatusError as e:
    check("oversized body: 413", e.status_code == 413 and e.body.get("code") == "request_too_large", str(e.body))

sys.exit(1 if failures else 0)
