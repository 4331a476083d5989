"""The facepipe services, one package each, installed as ``facepipe_services``;
``facepipe serve NAME`` finds them through the ``facepipe.services`` entry points."""
