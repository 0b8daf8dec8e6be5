// The built-in calibration set: written for qtool (no third-party text), varied on purpose —
// narrative and expository prose, dialogue, source code in several languages, arithmetic and
// algebra, lists and tables — so that activation ranges seen during calibration resemble those
// of real prompts. Documents are separated by blank lines (calib/dataset.h).
#include "calib/dataset.h"

#include "formats/sha256.h"

namespace qt::calib {
namespace {
const char* kText = R"QTOOLTEXT(
The harbor town woke slowly. Fishing boats knocked against the pier while gulls argued over the remains of yesterday's catch, and the baker on Quay Street pulled the first trays of rye bread from an oven that had been burning since four. By seven the market square was full: crates of mackerel on ice, bundles of leeks tied with twine, a woman selling honey in jars of three different sizes. Nobody hurried. The tide would turn at noon, and everything in the town, from the ferry timetable to the hour the school let out, was arranged around it.

When the railway reached the valley in 1871, the price of coal in the mountain villages fell by almost half within two years. Farmers who had burned peat for generations began to buy stoves, and the small workshops that had made clay ovens closed one after another. Historians still disagree about whether the change made the villages richer. Incomes rose, but many young people followed the railway to the cities, and the population of the upper valley in 1911 was lower than it had been a century earlier.

A good experiment begins with a question that can be wrong. If you suspect that a plant grows faster under blue light, you need two groups of seedlings that differ only in the color of the lamp above them: the same soil, the same water, the same temperature, and enough plants in each group that a single sick seedling cannot decide the result. Write down what you expect before you measure. Then measure carefully, record every value, including the inconvenient ones, and let the numbers speak.

Photosynthesis converts light energy into chemical energy. In the chloroplasts of a leaf, chlorophyll absorbs mostly red and blue light, which drives the splitting of water molecules and releases oxygen as a by-product. The energy captured in this first stage is stored in two carrier molecules, ATP and NADPH, which the Calvin cycle then uses to fix carbon dioxide into three-carbon sugars. Roughly six molecules of carbon dioxide and six of water yield one molecule of glucose and six of oxygen.

"Are you sure this is the right road?" Maya asked, peering at the map on her phone.
"Positive," said Tom. "The signal dropped an hour ago, but I remember the turn after the old mill."
"There was no mill."
"There was a building that looked like a mill."
Maya sighed and handed him a sandwich. "Fine. If we reach the lake by dark, I'll admit you were right. If we reach a farm, we ask for directions."
"Deal," Tom said, and they drove on in comfortable silence while the hills turned gold.

User: Can you explain what a hash table is in simple terms?
Assistant: Sure. A hash table stores key-value pairs so you can find a value quickly by its key. It uses a hash function to turn each key into a number, and that number picks a slot in an array. Looking up a key means computing its hash and going straight to that slot, which usually takes constant time. When two keys land in the same slot, the table resolves the collision, for example by keeping a small list in each slot or by probing for the next free one.
User: And what happens when the table gets full?
Assistant: Most implementations grow the array, often doubling it, and reinsert every entry. That resize is expensive, but it happens rarely, so the average cost per insertion stays constant.

def merge_sorted(a, b):
    """Merge two sorted lists into one sorted list in O(len(a) + len(b))."""
    i = j = 0
    out = []
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i]); i += 1
        else:
            out.append(b[j]); j += 1
    out.extend(a[i:])
    out.extend(b[j:])
    return out

if __name__ == "__main__":
    print(merge_sorted([1, 4, 9], [2, 3, 10, 11]))

#include <cstdint>
#include <vector>

// Counts the set bits of every integer in [0, n) using the recurrence bits(i) = bits(i >> 1) + (i & 1).
std::vector<uint8_t> popcounts(uint32_t n) {
  std::vector<uint8_t> bits(n, 0);
  for (uint32_t i = 1; i < n; ++i) bits[i] = static_cast<uint8_t>(bits[i >> 1] + (i & 1u));
  return bits;
}

fn parse_pairs(input: &str) -> Result<Vec<(String, i64)>, String> {
    input
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once('=').ok_or(format!("missing '=' in {l:?}"))?;
            let v: i64 = v.trim().parse().map_err(|e| format!("{k}: {e}"))?;
            Ok((k.trim().to_string(), v))
        })
        .collect()
}

SELECT customer_id, COUNT(*) AS orders, SUM(total_cents) / 100.0 AS revenue
FROM orders
WHERE created_at >= DATE '2024-01-01' AND status <> 'cancelled'
GROUP BY customer_id
HAVING COUNT(*) >= 3
ORDER BY revenue DESC
LIMIT 20;

const debounce = (fn, ms = 250) => {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn.apply(this, args), ms);
  };
};
window.addEventListener("resize", debounce(() => console.log(innerWidth, innerHeight)));

Solve 3x + 7 = 25. Subtract 7 from both sides to get 3x = 18, then divide by 3: x = 6. Check: 3 * 6 + 7 = 18 + 7 = 25.

The sum of the first n odd numbers is n squared: 1 = 1, 1 + 3 = 4, 1 + 3 + 5 = 9, 1 + 3 + 5 + 7 = 16. A proof by induction: if 1 + 3 + ... + (2n - 1) = n^2, then adding the next odd number 2n + 1 gives n^2 + 2n + 1 = (n + 1)^2.

A rectangle has a perimeter of 46 cm and an area of 120 square centimeters. Let the sides be a and b. Then a + b = 23 and ab = 120, so a and b are the roots of t^2 - 23t + 120 = 0, which factors as (t - 8)(t - 15) = 0. The sides are 8 cm and 15 cm, and the diagonal is sqrt(64 + 225) = sqrt(289) = 17 cm.

Compound interest: 5,000 dollars invested at 4.5% per year, compounded monthly, grows to 5000 * (1 + 0.045/12)^(12*10) = 5000 * 1.5666 ≈ 7,833 dollars after ten years. With simple interest it would be only 5000 * (1 + 0.045 * 10) = 7,250 dollars.

Shopping list for Saturday:
- 2 kg potatoes
- 1 bunch of coriander
- 6 eggs (free range)
- olive oil, 750 ml
- 3 lemons
- dark chocolate, at least 70% cocoa

| city      | population (2020) | area (km^2) | density per km^2 |
|-----------|-------------------|-------------|------------------|
| Lisbon    | 545,000           | 100         | 5,450            |
| Porto     | 232,000           | 41          | 5,660            |
| Coimbra   | 140,000           | 319         | 439              |

Dear Ms. Okafor,
Thank you for your letter of 14 March. I am pleased to confirm that the committee approved your proposal for the community garden at its meeting on Tuesday. Work on the raised beds can begin in April, and the council will deliver compost and two water barrels before the end of the month. Please let me know which Saturday suits your volunteers for the first planting day.
With best regards,
Daniel Ferreira, Parks Department

The error message said "permission denied", so the first thing to check was the owner of the directory. Running ls -l showed that the deploy script had created it as root. A quick chown -R www-data:www-data /srv/app/uploads fixed the immediate problem, but the real fix was to run the script as the service user, which is what the new systemd unit now does.

In the late afternoon the wind shifted to the north, and the temperature dropped eight degrees in less than an hour. Hikers on the ridge pulled on jackets, and the guide decided to turn back one kilometer short of the summit. "The mountain will still be here next week," she said, which is what guides have been saying to disappointed clients for as long as there have been mountains and clients.

Quantum computers do not simply try every answer at once. A quantum algorithm arranges for the amplitudes of wrong answers to cancel through interference while the amplitude of the right answer grows, so that a measurement at the end is likely to return it. This works only for problems with special structure, such as factoring large numbers or simulating molecules, which is why researchers expect quantum machines to complement classical computers rather than replace them.

Q: What is the capital of Australia?
A: Canberra. Many people guess Sydney or Melbourne, but Canberra was chosen as a compromise between the two and purpose-built as the capital; Parliament first met there in 1927.
Q: How many bones are in the adult human body?
A: Usually 206, although the exact number varies slightly from person to person because of extra small bones in the hands and feet.
)QTOOLTEXT";
}  // namespace

CalibrationText builtin_calibration_text() {
  static const CalibrationText t = [] {
    CalibrationText c;
    std::string raw(kText);
    c.source = "built-in";
    Sha256 h;
    h.update(raw.data(), raw.size());
    c.sha256 = h.hex();
    // Same document rule as plain-text files: blank lines separate documents, except that the
    // code samples above contain no blank lines inside them.
    std::string cur;
    size_t p = 0;
    while (p <= raw.size()) {
      size_t e = raw.find('\n', p);
      if (e == std::string::npos) e = raw.size();
      std::string line = raw.substr(p, e - p);
      if (line.find_first_not_of(" \t") == std::string::npos) {
        if (!cur.empty()) { c.documents.push_back(cur); cur.clear(); }
      } else {
        if (!cur.empty()) cur += '\n';
        cur += line;
      }
      p = e + 1;
    }
    if (!cur.empty()) c.documents.push_back(cur);
    return c;
  }();
  return t;
}

}  // namespace qt::calib
