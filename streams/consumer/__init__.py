"""What a tenant's own consumer needs to read its clean stream: decoding records with nothing but
the published ``schemas/clean/<type>/v<N>.avsc``, every version (``clean_decoder``). It must not depend on the pipeline's
keys, Redis or settings: a tenant runs it with the schemas alone.
"""
