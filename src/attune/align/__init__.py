"""Alignment from preferences: the maths and plumbing shared by the reward, DPO, PPO and GRPO objectives.

  losses.py        preference losses over sequence log-probs (DPO sigmoid/IPO/hinge, SimPO) and the
                   pairwise Bradley-Terry reward loss
  rl.py            PPO/GRPO building blocks: GAE, whitening, group-normalised advantages,
                   clipped policy and value losses, per-token KL estimators, KL controllers
  pairs.py         preference pairs as packed two-document examples, per-document sums
  reward_model.py  a sequence-scoring head on a causal LM: scoring, saving, loading
  rewards.py       Python reward functions (house style, exact answer, JSON format), loading them
                   from a recipe, and the reward source of a PPO/GRPO stage
  rollout.py       sampling replies to prompts and reading their log-probs (and values) back
  commands.py      `attune reward score`

The objectives themselves live in `attune.train.objectives.{reward,dpo,ppo,grpo}`; see docs/alignment.md.
"""
