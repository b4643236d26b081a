"""Client work as a described task: the plan drawn in advance, a pure run that trains
nothing it does not own, and the reference executor reproducing the closure it replaced."""

from __future__ import annotations

import copy

import torch

from nmoe_sim.engine.tasks import TrainTask, draw_plan, execute, plan_samples
from nmoe_sim.fl.stage1 import FedCE
from nmoe_sim.seeds import SeedStreams
from nmoe_sim.world import build_world

from conftest import tiny_cfg
from test_rounds import drive


def minibatches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """The in-place loop's shuffle that plans replaced: one permutation, cut into batches."""
    order = torch.randperm(n, generator=gen)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def test_plan_drawn_in_advance_equals_shuffling_each_epoch() -> None:
    a, b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    plan, draws = draw_plan(10, 3, 4, a)
    assert draws is None
    lazy = [minibatches(10, 4, b) for _ in range(3)]
    assert [[t.tolist() for t in epoch] for epoch in plan] == [[t.tolist() for t in epoch] for epoch in lazy]
    assert [len(t) for t in plan[0]] == [4, 4, 2]  # the last batch is kept, short


def fedce_task() -> tuple[FedCE, TrainTask]:
    world = build_world(tiny_cfg(), SeedStreams(0))
    algo = FedCE(world, world.cfg.stage1)
    return algo, algo.task(0, 1)


def test_execute_matches_the_training_loop_and_touches_neither_template_nor_start() -> None:
    algo, task = fedce_task()
    template_before = copy.deepcopy(algo.model.state_dict())
    start_before = {k: v.clone() for k, v in task.start.items()}
    got = execute(task, copy.deepcopy(task.template))
    # The loop the task replaced, on its own copy, with a generator drawn like the task's.
    ref = copy.deepcopy(task.template)
    ref.load_state_dict(task.start)
    gen = algo.world.streams.torch(f"{algo.stage}/client1")
    opt = torch.optim.SGD(list(ref.parameters()), lr=task.lr, momentum=task.momentum, weight_decay=task.weight_decay)
    ce = torch.nn.CrossEntropyLoss()
    ref.train()
    for _ in range(algo.cfg.local_epochs):
        total = 0.0
        for idx in minibatches(task.num_samples, algo.cfg.batch_size, gen):
            batch_loss = ce(ref(task.x[idx]), task.y[idx])
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
            total += float(batch_loss.detach()) * len(idx)
        loss = total / task.num_samples
    assert all(torch.equal(got.state[k], v) for k, v in ref.state_dict().items())
    assert got.loss == loss and got.num_samples == task.num_samples == algo.world.clients[1].num_samples
    assert not all(torch.equal(got.state[k], start_before[k]) for k in start_before)  # it did train
    assert all(torch.equal(algo.model.state_dict()[k], v) for k, v in template_before.items())
    assert all(torch.equal(task.start[k], v) for k, v in start_before.items())


def test_a_round_trains_only_in_the_executors_own_module() -> None:
    world = build_world(tiny_cfg(), SeedStreams(0))
    algo = FedCE(world, world.cfg.stage1)
    before = {k: v.clone() for k, v in algo.model.state_dict().items()}
    global_before = {k: v.clone() for k, v in algo.global_state.items()}
    sim = world.new_sim("test")
    drive(sim, algo, world.cfg.stage1.model_copy(update={"rounds": 1}))
    assert all(torch.equal(algo.model.state_dict()[k], v) for k, v in before.items())
    assert not all(torch.equal(algo.global_state[k], v) for k, v in global_before.items())  # aggregated
    train = [c for c in world.recorder.computes if c.tag == "r0/train"]
    assert len(train) == 4 and all(c.flops == algo.task(0, int(c.node)).flops for c in train)


def test_per_batch_draws_interleave_with_the_shuffles_as_an_in_place_loop_draws() -> None:
    from nmoe_sim.engine.losses import draw_generator_state, generator_from

    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    plan, draws = draw_plan(10, 2, 4, a, per_batch=draw_generator_state(5))
    assert draws is not None and [len(e) for e in draws] == [3, 3]
    for e, epoch in enumerate(plan):  # the loop the plan replaces: shuffle, then each batch's noise
        order = torch.randperm(10, generator=b)
        for i, idx in enumerate(epoch):
            assert torch.equal(idx, order[4 * i : 4 * i + 4])
            want = torch.randn((len(idx), 5), generator=b)
            assert torch.equal(torch.randn((len(idx), 5), generator=generator_from(draws[e][i])), want)
    assert torch.equal(a.get_state(), b.get_state())  # both streams end at the same place


def test_a_step_cap_is_the_loops_first_batches_and_leaves_the_generator_where_that_loop_would() -> None:
    a, b = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    capped, draws = draw_plan(10, 3, 4, a, per_batch=lambda n, g: int(torch.randint(100, (1,), generator=g)),
                              max_steps=4)
    # The loop: epoch 0's permutation and its 3 batches (each with its draw), then epoch 1's
    # permutation and its first batch, then it stops: epoch 2 is never shuffled.
    order0 = minibatches(10, 4, b)
    d0 = [int(torch.randint(100, (1,), generator=b)) for _ in order0]
    order1 = minibatches(10, 4, b)
    d1 = [int(torch.randint(100, (1,), generator=b))]
    assert [[t.tolist() for t in ep] for ep in capped] == [[t.tolist() for t in order0], [order1[0].tolist()]]
    assert draws == (tuple(d0), tuple(d1))
    assert torch.equal(a.get_state(), b.get_state())
    assert plan_samples(capped) == 10 + 4
    # A cap above the plan's length changes nothing.
    full = draw_plan(10, 3, 4, torch.Generator().manual_seed(7))[0]
    roomy = draw_plan(10, 3, 4, torch.Generator().manual_seed(7), max_steps=99)[0]
    assert [[t.tolist() for t in ep] for ep in roomy] == [[t.tolist() for t in ep] for ep in full]
