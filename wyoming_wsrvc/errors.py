"""The errors every layer raises: `ClientError`, the one a client hears about (its `code` and
text go into the Wyoming `error` event; the handler sends it and closes that connection), and
`SettingsError`, a setting (a flag, a profile's field) the server cannot use."""


class ClientError(RuntimeError):
    """A request the server refuses or could not serve.

    Codes: `invalid-event`, `text-too-long`, `protocol-error` (the request), `out-of-memory`,
    `voice-unavailable`, `upstream-failed`, `synthesis-failed` (the work).
    """

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


class SettingsError(ValueError):
    """A setting has a value the server cannot use."""
