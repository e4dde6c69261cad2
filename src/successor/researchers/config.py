"""The researchers' config sections (part of the run config, `config.py`, which re-exports them): the Optuna
sampler, an LLM endpoint, a role (researcher or critic) and the manager."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..schema import Strict


class OptunaConfig(Strict):
    sampler: Literal["tpe", "cmaes"] = "tpe"
    storage: Literal["memory", "journal"] = Field("memory", description="journal: also keep the study in "
                                                  "researcher/optuna.journal; the run's store stays the source "
                                                  "of truth, and the study is rebuilt from it every generation")
    startup_trials: int = Field(4, ge=0, description="random proposals before the sampler models the space")


class LLMConfig(Strict):
    """A chat model behind an OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama) or Anthropic's API."""

    provider: Literal["openai", "anthropic"] = "openai"
    model: str = Field(..., min_length=1)
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1 for vLLM; None: the "
                                 "provider's own")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(2000, ge=64)
    timeout_s: float = Field(120.0, gt=0)
    retries: int = Field(3, ge=0, le=10, description="retries of a failed call (time-out, rate limit, server "
                         "error), with exponential backoff")
    backoff_s: float = Field(2.0, ge=0.0, description="first backoff; doubles on each retry")
    repairs: int = Field(2, ge=0, le=10, description="times an answer that fails the schema is sent back with "
                         "the validation error")
    price_in_per_mtok: float = Field(0.0, ge=0.0, description="USD per million prompt tokens, for the cost cap")
    price_out_per_mtok: float = Field(0.0, ge=0.0, description="USD per million completion tokens")
    memory_items: int = Field(20, ge=0, description="most recent past candidates shown in the prompt")


class RoleConfig(Strict):
    """The researcher behind one of the manager's roles."""

    name: Literal["evolution", "optuna", "llm"] = "evolution"
    mutation_rate: float = Field(0.3, gt=0.0, le=1.0)
    optuna: OptunaConfig = OptunaConfig()
    llm: LLMConfig | None = None

    @model_validator(mode="after")
    def _llm(self) -> "RoleConfig":
        if self.name == "llm" and self.llm is None:
            raise ValueError("an llm researcher needs an llm section (provider, model, base_url, api_key_env)")
        return self


class ManagerConfig(Strict):
    explorer: RoleConfig = RoleConfig(mutation_rate=0.8)
    exploiter: RoleConfig = RoleConfig(mutation_rate=0.15)
    critic: RoleConfig | None = Field(None, description="None: the critic checks proposals against research "
                                      "memory only; an llm role also asks the model to review the survivors")


class ResearcherConfig(RoleConfig):
    """The run's researcher: a role's fields, plus how many candidates a generation and the manager's team."""

    name: Literal["evolution", "optuna", "llm", "manager", "random"] = "evolution"  # tinylm: not llm, manager
    candidates: int = Field(2, ge=1, le=64, description="candidates proposed per generation")
    seed: int | None = Field(None, ge=0, description="tinylm: also seeds the stream each generation's proposals and "
                             "candidate seeds are drawn from, so one generation 0 can be searched on from under "
                             "several seeds (None: the run seed and the generation alone, as before)")
    crossover: bool = True
    manager: ManagerConfig = ManagerConfig()
