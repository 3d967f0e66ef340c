"""The AiTEMS API: signing, the HTTP client with bounded retries, error mapping, and the
delivery of one batch (split on 413, bisected on 400).

- ``signing``: NCP API gateway signature v2, shared with the emulator;
- ``client``: ``AitemsClient``, signed requests with retries;
- ``errormap``: AiTEMS answers and connection errors onto the exception tree;
- ``delivery``: one batch to AiTEMS, and the ``Uploader`` seam.
"""
