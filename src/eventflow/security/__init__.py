"""Who may do what: API keys with scopes (``keys``), how requests present them
(``auth``) and the record of every admin action (``audit``)."""
