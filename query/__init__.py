"""The GraphQL API over the Postgres views."""
