"""Telling a person when calendar sync fails, and when it works again.

``catalogue``: the stable failure codes with the text a person sees, the likely cause and the fix.
``tracker``: the failure policy (quiet retries, incidents, slower retries during one, one e-mail per incident,
storm summaries). ``mailer``: the e-mail texts and SMTP sending. Import them from their modules.
"""
