"""The emulator's EWS wing: SOAP over HTTP at ``/EWS/Exchange.asmx`` (``service``: authentication, versions,
impersonation, throttling), one module per operation (``operations/``), calendar items to and from XML
(``itemxml``), restrictions (``restriction``), push delivery (``push``, ``notifications``), sync states and
subscriptions, the dialects other EWS servers speak (``dialect``) and the strict schema check
(``schema_check``). The mailbox model and the clock below it are shared with the Graph wing."""
