"""The official openai Python client through the gateway, by model name.

Usage: python gateway_client.py BASE_URL MODEL [API_KEY]
(run by tests/cluster/gateway-checks.sh). Exits non-zero with a message on
the first mismatch.
"""
import sys

from openai import OpenAI


def main(base, model, key):
    client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)
    ids = [m.id for m in client.models.list().data]
    assert model in ids, ids

    c = client.completions.create(model=model, prompt="The capital of France is", max_tokens=5, temperature=0)
    assert c.choices[0].finish_reason == "length", c.choices[0].finish_reason
    assert c.usage.completion_tokens == 5, c.usage
    pieces = []
    for chunk in client.completions.create(model=model, prompt="The capital of France is", max_tokens=5,
                                           temperature=0, stream=True):
        pieces.append(chunk.choices[0].text)
    assert "".join(pieces) == c.choices[0].text, (pieces, c.choices[0].text)

    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=4, temperature=0)
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens == 4, chat.usage
    deltas = []
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=4, temperature=0, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
    assert "".join(deltas) == chat.choices[0].message.content, (deltas, chat.choices[0].message.content)
    print("openai client through the gateway: models, completions and chat (streaming and not) ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "unused")
