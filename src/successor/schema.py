"""The base of every config and policy model: unknown fields are errors, so a typo never passes silently."""
from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
