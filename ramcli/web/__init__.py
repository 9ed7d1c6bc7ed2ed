"""`ramcli serve`: a local gallery over the front door (``ramcli.Library``) and ``search.gallery``."""
