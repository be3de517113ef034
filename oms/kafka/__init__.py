"""Kafka plumbing shared by every process of the OMS.

| module | job |
|---|---|
| ``security`` | how every client connects: TLS, SASL login, each library's options |
| ``acls`` | who may do what: the least-privilege ACL table of every principal |
| ``admin`` | topics: their specs (partitions, compaction, retention), creation, deletion |
| ``partitioning`` | which partition a key lands on (the co-partitioning rule) |
| ``codecs`` | Faust codecs that keep our pydantic records as JSON in table changelogs |
| ``faust_worker`` | a Faust app with the project's conventions, and the worker that runs it |
| ``faust_patches`` | fixes to faust-streaming/aiokafka, applied when a worker starts |
"""
