"""Developer tools that drive the app from outside: starting `streamlit run` and a headless
Chromium (tools.serve) for the benchmark's cold start, the browser test and the load test.
Outside the `seq2seq` package on purpose: the engine imports neither Streamlit nor Playwright."""
