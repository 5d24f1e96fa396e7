"""Retrieval: OpenAI-shaped vector stores over an embedded HNSW index (faiss) or a distributed vector database.

collection.py   one store's index: live upsert and delete beside lock-free searches, WAL + snapshots on disk
planner.py      which chunks a reader may see (team, ACL, attribute filters) and how to search them
segments.py     the growing buffer (exact search) and the sealed HNSW segments
qdrant.py       the same backend interface over Qdrant (local mode in tests, a server in production)
service.py      vector stores, files, chunking and embeddings; http.py serves it as /v1/vector_stores
"""
