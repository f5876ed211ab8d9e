"""Faces in, people out: the embedder registry, the facenet and dlib embedders, the gallery of
known people and its store, the album store."""
