"""The voice studio and the HTTP APIs (OpenAI speech, Prometheus metrics): aiohttp, off unless
`--http-uri` is given."""
