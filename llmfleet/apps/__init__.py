"""Applications on top of the serving stack: retrieval (vector stores), semantic cache, conversation memory and
evaluations. They use models only through the OpenAI API (e.g. /v1/embeddings over HTTP), never engine internals,
so each one mounts the same way on a replica server and on the gateway."""
