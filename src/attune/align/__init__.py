"""Alignment from preferences: the maths shared by the reward, DPO, PPO and GRPO objectives.

  losses.py        preference losses over sequence log-probs (DPO sigmoid/IPO/hinge, SimPO) and the
                   pairwise Bradley-Terry reward loss
  rl.py            PPO/GRPO building blocks: GAE, whitening, group-normalised advantages,
                   clipped policy and value losses, per-token KL estimators, KL controllers
  rewards.py       Python reward functions (house style, exact answer, format) and their loading
  reward_model.py  a sequence-scoring head on a causal LM: scoring, saving, loading
  rollout.py       sampling responses from prompts for online RL

The objectives themselves live in `attune.train.objectives.{reward,dpo,ppo,grpo}`.
"""
