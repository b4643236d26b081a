"""The scenario schema and its loading (docs/architecture.md).

A scenario is parsed, merged with presets (``channel/``, ``topologies/``), patched by
``--set KEY=VALUE`` overrides and validated into a frozen :class:`Scenario`. Inner code
takes these typed objects, never dicts. The package re-exports every name, so
``from nmoe_sim.config import Scenario`` is the one import inner code needs:

* ``assets``: where presets and scenarios live;
* ``training``: data, models, stage 1-3 training, baselines;
* ``network``: channel, topology, devices, mobility;
* ``scenario``: sweep, runtime, output and the :class:`Scenario` itself;
* ``loading``: presets, overrides, validation errors, reading and writing YAML.
"""

from __future__ import annotations

from nmoe_sim.config.assets import (  # noqa: F401
    ASSET_FOLDERS,
    CHANNEL_PRESETS_DIR,
    PACKAGE_ASSETS_DIR,
    REPO_ROOT,
    SCENARIOS_DIR,
    TOPOLOGY_PRESETS_DIR,
    asset_dir,
)
from nmoe_sim.config.training import (  # noqa: F401
    AugmentConfig,
    BaselinesConfig,
    CentralizedConfig,
    DataConfig,
    FedGateConfig,
    FedSCConfig,
    ModelConfig,
    MonoViewsConfig,
    PartitionConfig,
    SGDConfig,
    Stage1Config,
    Stage2Config,
    Stage3Config,
    TrainConfig,
)
from nmoe_sim.config.network import (  # noqa: F401
    BUILTIN_DEVICES,
    ChannelConfig,
    DeviceProfile,
    DevicesConfig,
    LinkChannels,
    MobilityConfig,
    NetworkConfig,
    TopologyConfig,
)
from nmoe_sim.config.scenario import (  # noqa: F401
    OutputConfig,
    RayConfig,
    RuntimeConfig,
    Scenario,
    SweepConfig,
    _LATER_KEYS,
)
from nmoe_sim.config.loading import (  # noqa: F401
    Override,
    _PRESET_SLOTS,
    _as_mapping,
    _expand_preset,
    _key_text,
    _load_preset,
    _schema_fields,
    apply_override,
    build_scenario,
    dump_yaml,
    expand,
    find_scenario_file,
    format_validation_error,
    load_raw,
    load_scenario,
    preset_names,
    read_scenario_file,
    resolve_presets,
    scenario_from_raw,
)
