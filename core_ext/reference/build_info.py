"""What kind of core this is, for benchmark reports."""


def build_info() -> dict:
    return {"implementation": "reference", "mode": "python"}
