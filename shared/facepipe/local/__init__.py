"""This machine as AWS: the emulated services from ``template.yaml``, the Lambda RIE, Docker
images, and the local stack (``facepipe local up``) built from them."""
