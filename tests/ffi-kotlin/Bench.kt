// The Kotlin side of the binding benchmarks (docs/benchmarks.md, "Bindings"): open a store,
// list its deals twice (cold, warm), one edit; or the process's peak RSS (the whole JVM's)
// after opening the store with a cache budget and listing it. Run by scripts/bench-bindings.sh:
//
//   java ... BenchKt time STORE
//   java ... BenchKt rss STORE CACHE_MIB

import com.sellsync.core.Device
import com.sellsync.core.DeviceConfig
import com.sellsync.core.FieldInput
import java.io.File
import kotlin.system.exitProcess

fun ms(since: Long) = (System.nanoTime() - since) / 1e6

fun peakRssKib(): Long =
    File("/proc/self/status").readLines().firstOrNull { it.startsWith("VmHWM:") }
        ?.split(Regex("\\s+"))?.get(1)?.toLong() ?: 0

fun main(args: Array<String>) {
    when {
        args.size == 2 && args[0] == "time" -> {
            var t = System.nanoTime()
            Device.open(DeviceConfig(args[1], null, false)).use { d ->
                val open = ms(t)
                t = System.nanoTime()
                val first = d.deals()
                val cold = ms(t)
                t = System.nanoTime()
                val deals = d.deals()
                val warm = ms(t)
                check(first.size == deals.size)
                t = System.nanoTime()
                d.set(deals[0].id, listOf(FieldInput("value", "4242")))
                val edit = ms(t)
                println(
                    "kotlin: deals=${deals.size} open_ms=%.1f list_cold_ms=%.1f list_warm_ms=%.1f edit_ms=%.1f"
                        .format(open, cold, warm, edit),
                )
            }
        }
        args.size == 3 && args[0] == "rss" -> {
            Device.open(DeviceConfig(args[1], args[2].toULong() shl 20, false)).use { d ->
                val n = d.deals().size
                check(n == d.deals().size)
                println("kotlin: deals=$n cache_mib=${args[2]} peak_rss_kib=${peakRssKib()}")
            }
        }
        else -> {
            System.err.println("usage: BenchKt time STORE | rss STORE CACHE_MIB")
            exitProcess(2)
        }
    }
}
