"""The judges that read answers: a local chat or classification model, an OpenAI-compatible
endpoint, and `factory.build_judge`, which turns the `judge` setting into one of them."""
