// The built-in held-out text of `qtool verify`: English prose written for qtool (no third-party
// text), on topics the built-in calibration set (builtin_text.cpp) does not touch, so that the
// model-level numbers are not measured on the data that set the static scales.
#include <string>

#include "verify/model_metrics.h"

namespace qt::verify {
namespace {
const char* kHeldout = R"QTOOLTEXT(A beekeeper learns to read a hive before opening it. On a warm morning the entrance is busy with foragers returning heavy with pollen, orange from dandelions or grey from the willows along the stream. A colony that is quiet at noon in June is worth a closer look: perhaps it has swarmed, perhaps the queen has failed, perhaps robbers from a stronger hive have been carrying off its stores. Smoke calms the guards, and slow hands do the rest. Each frame is lifted straight up, turned to the light and checked for eggs, which stand upright like tiny grains of rice at the bottom of the cells.

The clock in the tower of the old town hall has not stopped since it was repaired in 1962. Every Sunday a volunteer climbs the ninety-one steps, winds the going train and the striking train with a crank the size of a bicycle pedal, and checks the pendulum against the time signal on a small radio. The clock gains a few seconds in hot weather and loses them again in winter, because the iron rod of the pendulum stretches and shrinks with the temperature. A brass nut at its lower end raises or lowers the heavy bob by a fraction of a turn, and that is all the adjustment the mechanism has ever needed.

Glaciers shape mountains more slowly than rivers, but far more thoroughly. Ice that has been compressed for centuries flows downhill under its own weight, dragging boulders frozen into its base across the bedrock like sandpaper. Where a river would cut a narrow valley shaped like a V, a glacier grinds out a broad U with steep walls and a flat floor. When the climate warms and the ice retreats, it leaves behind polished rock, long ridges of rubble called moraines, and lakes dammed by the debris it could no longer carry.

The violin maker split the spruce along the grain rather than sawing it, so that every fibre of the top would run unbroken from one end to the other. She planed the two halves, joined them with hot hide glue, and began to carve the arch, tapping the wood and listening as it grew thinner. Too thick and the instrument would sound dull; too thin and it would buzz and eventually crack. There was no table to tell her when to stop. After thirty years she simply knew the note the plate should ring at when she held it by one edge and struck it with a knuckle.

Lighthouse keepers kept a log of everything: the hour the lamp was lit, the wind, the visibility, every ship that passed within sight. Most entries are dull, and that is their value. Read together, a century of them shows storms arriving earlier in the autumn, fog banks growing rarer, and the slow change from sail to steam, one line of careful handwriting at a time.
)QTOOLTEXT";
}  // namespace

const std::string& builtin_heldout_text() {
  static const std::string t(kHeldout);
  return t;
}

}  // namespace qt::verify
