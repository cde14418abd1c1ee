// The story of issue 11 through the generated Kotlin bindings, against a real `sellsync hub`
// this app starts (the same story as tests/ffi-python): two devices enrol, edit the same deal
// offline, both see the value conflict (base, mine, theirs, who, when), one resolves, the
// other's listener fires and it sees the resolution; typed exceptions (validation,
// StoreLocked, Auth after a revoke, Closed); a listener that throws does not break the
// device; `close()` and `use` release the store.
//
// Run by scripts/ffi-kotlin.sh, which compiles this file with the generated bindings and runs
// it with -Djna.library.path at the built library. Environment: SELLSYNC_BIN (the CLI),
// SELLSYNC_CATALOG (the example catalog, tests/ffi-python/catalog.json). Every check throws;
// any failure exits non-zero. Every wait is bounded; a watchdog ends a run that hangs.

import com.sellsync.core.ChangeListener
import com.sellsync.core.ConflictView
import com.sellsync.core.Device
import com.sellsync.core.DeviceConfig
import com.sellsync.core.Enrolment
import com.sellsync.core.FieldInput
import com.sellsync.core.RecordKind
import com.sellsync.core.RecordView
import com.sellsync.core.Resolution
import com.sellsync.core.SellsyncException
import com.sellsync.core.ValueKind
import com.sellsync.core.CustomFieldKind
import com.sellsync.core.enrolChecked
import java.io.File
import java.nio.file.Files
import java.time.Instant
import java.util.Collections
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import kotlin.system.exitProcess
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout

/** The bound of each sync round, in seconds. */
const val ROUND: UInt = 30u

/** The whole run's bound: a hang ends the process with this many seconds elapsed. */
const val WATCHDOG_SECS = 300L

class CheckFailed(message: String) : Exception(message)

fun check(ok: Boolean, what: () -> String) {
    if (!ok) throw CheckFailed(what())
}

fun <T> eq(got: T, want: T, what: String) = check(got == want) { "$what: got $got, want $want" }

/** Runs `block`, which must throw an `E`; returns it. */
inline fun <reified E : Throwable> raises(what: String, block: () -> Unit): E {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) return e
        throw CheckFailed("$what: threw ${e::class.qualifiedName} (${e.message}), want ${E::class.simpleName}")
    }
    throw CheckFailed("$what: nothing thrown, want ${E::class.simpleName}")
}

/** Runs `sellsync ARGS...`, returns its stdout; fails on a non-zero exit or after 60 s. */
fun run(vararg args: String): String {
    val p = ProcessBuilder(listOf(bin(), *args)).redirectErrorStream(false).start()
    val out = p.inputStream.bufferedReader().readText()
    check(p.waitFor(60, TimeUnit.SECONDS)) { "sellsync ${args.joinToString(" ")} did not end" }
    val err = p.errorStream.bufferedReader().readText()
    check(p.exitValue() == 0) { "sellsync ${args.joinToString(" ")} failed: $err" }
    return out
}

fun bin(): String = System.getenv("SELLSYNC_BIN") ?: throw CheckFailed("SELLSYNC_BIN is not set")

/** A JSON string field of `json`, e.g. `"token": "..."` (the CLI's --json output). */
fun jsonString(json: String, key: String): String =
    Regex("\"$key\"\\s*:\\s*\"([^\"]*)\"").find(json)?.groupValues?.get(1)
        ?: throw CheckFailed("no \"$key\" in $json")

fun jsonInt(json: String, key: String): Long =
    Regex("\"$key\"\\s*:\\s*(\\d+)").find(json)?.groupValues?.get(1)?.toLong()
        ?: throw CheckFailed("no \"$key\" in $json")

/** A running `sellsync hub` on 127.0.0.1 (a port the OS picks) with the example catalog and one
 * team (users 2 and 3). */
class Hub(val dir: File) : AutoCloseable {
    val store = File(dir, "hub.redb")
    private val log = File(dir, "hub.log")
    private val proc: Process
    val url: String

    init {
        val acl = File(dir, "acl.toml")
        acl.writeText("admins = [1]\n[[teams]]\nid = 10\nmembers = [2, 3]\n")
        val catalog = System.getenv("SELLSYNC_CATALOG") ?: throw CheckFailed("SELLSYNC_CATALOG is not set")
        proc = ProcessBuilder(
            bin(), "hub", "--store", store.path, "--listen", "127.0.0.1:0",
            "--acl", acl.path, "--catalog", catalog,
        ).redirectError(log).start()
        val first = arrayOfNulls<String>(1)
        val ready = CountDownLatch(1)
        Thread {
            first[0] = proc.inputStream.bufferedReader().readLine()
            ready.countDown()
        }.apply { isDaemon = true }.start()
        val line = if (ready.await(60, TimeUnit.SECONDS)) first[0] else null
        if (line == null || !line.startsWith("listening on ")) {
            close()
            throw CheckFailed("sellsync hub did not start: $line\n${log.readText()}")
        }
        url = line.split(" ").last()
    }

    fun token(user: Int, device: String): String =
        jsonString(run("hub", "token", "--store", store.path, "--user", "$user", "--device", device, "--json"), "token")

    fun revoke(device: String) {
        val r = run("hub", "revoke", "--store", store.path, "--device", device, "--json")
        check(jsonInt(r, "revoked") >= 1) { "nothing revoked: $r" }
    }

    override fun close() {
        proc.destroy()
        if (!proc.waitFor(10, TimeUnit.SECONDS)) {
            proc.destroyForcibly()
            proc.waitFor(10, TimeUnit.SECONDS)
        }
    }
}

/** Keeps every batch of changed record ids it is told of (from whichever thread). */
class Recorder : ChangeListener {
    val batches: MutableList<List<String>> = Collections.synchronizedList(mutableListOf())

    @Volatile
    var told = CountDownLatch(1)

    override fun onChange(records: List<String>) {
        batches.add(records.toList())
        told.countDown()
    }

    fun seen(): Set<String> = synchronized(batches) { batches.flatten().toSet() }

    fun reset() {
        batches.clear()
        told = CountDownLatch(1)
    }
}

class Throws : ChangeListener {
    @Volatile
    var calls = 0

    override fun onChange(records: List<String>) {
        calls += 1
        throw IllegalStateException("the app's listener failed")
    }
}

fun sync(d: Device) = runBlocking { withTimeout((ROUND.toLong() + 10) * 1000) { d.syncHub(ROUND) } }

fun config(dir: File, name: String) = DeviceConfig(File(dir, "$name.redb").path, null, true)

fun enrol(hub: Hub, dir: File, user: Int, name: String): Pair<Device, DeviceConfig> {
    val cfg = config(dir, name)
    return Device.enrol(cfg, Enrolment(hub.url, hub.token(user, name), null)) to cfg
}

fun field(view: RecordView, name: String) = view.fields.firstOrNull { it.name == name }?.value

fun valueConflict(d: Device, deal: String): ConflictView.Field {
    val all = d.conflicts()
    eq(all.size, 1, "records in conflict")
    val rec = all[0]
    eq(rec.record, deal, "the record in conflict")
    eq(rec.kind, RecordKind.DEAL, "its kind")
    val fields = rec.conflicts.filterIsInstance<ConflictView.Field>().filter { it.field == "value" }
    eq(fields.size, 1, "value conflicts in ${rec.conflicts}")
    return fields[0]
}

fun story(dir: File) = Hub(dir).use { hub ->
    val (rita0, ritaCfg) = enrol(hub, dir, 2, "rita-phone")
    var rita = rita0
    val (carl, _) = enrol(hub, dir, 3, "carl-laptop")
    eq(rita.id() to rita.user(), "rita-phone" to 2uL, "rita's id and user")

    sync(rita) // brings the catalog
    val deal = rita.createDeal(
        listOf(
            FieldInput("name", "Fair lead"),
            FieldInput("value", "1000"),
            FieldInput("currency", "EUR"),
            FieldInput("stage_id", "12"),
        ),
    )
    eq(rita.status().pendingChanges, 1uL, "pending before the round")
    eq(sync(rita).peer, "hub", "the round's peer")
    eq(rita.status().pendingChanges, 0uL, "pending after the round")
    check(rita.status().lastHubSyncMs != null) { "no last hub sync" }
    check(deal in sync(carl).changed) { "carl's round brings the deal" }
    val summaries = carl.deals()
    eq(summaries.size, 1, "carl's deals")
    val s = summaries[0]
    eq(listOf(s.id, s.name, s.owner, s.stage), listOf(deal, "Fair lead", 2uL, 12uL), "carl's summary")
    eq(s.value?.kind to s.value?.text, ValueKind.MONEY to "1000.00", "carl's summary value")

    // Offline: both edit the value; Rita adds a note, Carl a tag.
    val note = rita.note(deal, "Met at the fair")
    rita.set(deal, listOf(FieldInput("value", "2000")))
    val carlTold = Recorder()
    carl.observe(carlTold)
    carl.set(deal, listOf(FieldInput("value", "3000.50")))
    carl.tag(deal, "vip")
    eq(carlTold.seen(), setOf(deal), "local edits are told")

    sync(rita)
    sync(carl)
    sync(rita)

    for ((who, d) in listOf("rita" to rita, "carl" to carl)) {
        val c = valueConflict(d, deal)
        val base = c.base ?: throw CheckFailed("$who: no base")
        eq(base.kind to base.text, ValueKind.MONEY to "1000.00", "$who: base")
        val got = c.candidates.map { Triple(it.by, it.device, it.value.text) }.sortedBy { it.first }
        eq(got, listOf(Triple(2uL, "rita-phone", "2000.00"), Triple(3uL, "carl-laptop", "3000.50")), "$who: candidates")
        for (x in c.candidates) {
            check(x.atMs > 0 && x.op.isNotEmpty()) { "$who: candidate without a time or an op: $x" }
            eq(Instant.parse(x.atIso).toEpochMilli(), x.atMs, "$who: at_iso and at_ms")
        }
        eq(d.status().openConflicts, 1uL, "$who: open conflicts")
        val ds = d.deals()
        eq(ds.size, 1, "$who: deals")
        eq(ds[0].openConflicts to ds[0].value, 1u to null, "$who: the summary in conflict")
        val view = d.record(deal)
        check("vip" in view.tags) { "$who: no vip tag in ${view.tags}" }
        check(view.activities.any { it.id == note && it.content == "Met at the fair" }) { "$who: no note" }
        eq(field(view, "value"), null, "$who: the value is in conflict")
        check(view.conflicts.any { it is ConflictView.Field && it.base != null }) { "$who: the view's conflict" }
    }
    // Rita's "mine" is 2000, Carl's is 3000.50: each device's own view.
    eq(valueConflict(rita, deal).candidates.single { it.device == "rita-phone" }.value.text, "2000.00", "rita's own")

    // An edit of the field in conflict is refused, typed.
    val inConflict = raises<SellsyncException.InConflict>("an edit of the field in conflict") {
        carl.set(deal, listOf(FieldInput("value", "1")))
    }
    eq(inConflict.field, "value", "InConflict.field")

    // Rita keeps hers; Carl's listener fires when the resolution arrives.
    rita.resolveField(deal, "value", Resolution.Mine)
    eq(rita.conflicts(), emptyList(), "rita's conflicts after resolving")
    raises<SellsyncException.NoConflict>("resolving twice") { rita.resolveField(deal, "value", Resolution.Mine) }
    sync(rita)
    carlTold.reset()
    check(deal in sync(carl).changed) { "carl's round brings the resolution" }
    check(carlTold.told.await(5, TimeUnit.SECONDS)) { "carl's listener is told of the resolved deal" }
    check(deal in carlTold.seen()) { "carl's listener names the deal: ${carlTold.batches}" }
    val view = carl.record(deal)
    eq(view.conflicts, emptyList(), "carl's view after the resolution")
    eq(field(view, "value")?.text, "2000.00", "carl's value after the resolution")
    eq(view.currency, "EUR", "currency")
    eq(carl.status().openConflicts, 0uL, "carl's open conflicts")
    check(carl.audit(deal).any { it.field == "value" && it.by == 2uL && it.chosen?.text == "2000.00" }) {
        "carl's audit: ${carl.audit(deal)}"
    }

    // A bad value raises the typed validation exception and writes nothing.
    for (bad in listOf("12.345", "lots", "-")) {
        val e = raises<SellsyncException.Invalid>("value=$bad") { carl.set(deal, listOf(FieldInput("value", bad))) }
        eq(e.field, "value", "Invalid.field for $bad")
        check(e.reason.isNotEmpty()) { "Invalid without a reason" }
    }
    eq(raises<SellsyncException.Invalid>("currency=EURO") {
        carl.set(deal, listOf(FieldInput("currency", "EURO")))
    }.field, "currency", "Invalid.field")
    eq(raises<SellsyncException.Invalid>("a bad id") { carl.record("not an id") }.field, "id", "Invalid.field")
    raises<SellsyncException.NoSuchRecord>("an unknown id") { carl.record("deal-unknown") }
    eq(raises<SellsyncException.Invalid>("timeout 0") { runBlocking { carl.syncHub(0u) } }.field,
        "timeout_secs", "Invalid.field")
    eq(field(carl.record(deal), "value")?.text, "2000.00", "nothing written by the refused edits")

    // A second open of the same store raises StoreLocked.
    raises<SellsyncException.StoreLocked>("a second open") { Device.open(ritaCfg) }
    // closeStore() releases it; the object stays and raises Closed.
    rita.closeStore()
    check(rita.isClosed()) { "isClosed after closeStore()" }
    raises<SellsyncException.Closed>("a call after closeStore()") { rita.deals() }
    rita.close() // AutoCloseable: frees the object too
    rita = Device.open(ritaCfg)
    eq(rita.deals().map { it.id }, listOf(deal), "rita's deals after reopening")

    // close() (AutoCloseable) frees the object and releases the store; so does the end of `use`.
    rita.close()
    raises<IllegalStateException>("a call after close()") { rita.deals() }
    Device.open(ritaCfg).use { d -> eq(d.deals().size, 1, "deals inside use") }
    Device.open(ritaCfg).use { d -> eq(d.id(), "rita-phone", "a second use opens again") }

    // A revoked device raises the auth exception ...
    hub.revoke("carl-laptop")
    val auth = raises<SellsyncException.Auth>("a round after the revoke") { sync(carl) }
    check(auth.reason.isNotEmpty()) { "Auth without a reason" }
    // ... and still works offline.
    carl.tag(deal, "after-revoke")
    check("after-revoke" in carl.record(deal).tags) { "an offline edit after the revoke" }
    carl.closeStore()
    carl.close()
}

fun throwingListener(dir: File) = Hub(dir).use { hub ->
    val (rita, _) = enrol(hub, dir, 2, "rita-phone")
    rita.use {
        sync(rita)
        val bad = Throws()
        rita.observe(bad)
        val good = Recorder()
        rita.observe(good)
        val deal = rita.createDeal(listOf(FieldInput("name", "Lead")))
        rita.tag(deal, "vip")
        rita.set(deal, listOf(FieldInput("value", "10")))
        eq(bad.calls, 3, "the throwing listener was called each time")
        eq(good.batches.toList(), listOf(listOf(deal), listOf(deal), listOf(deal)), "the others are still told")
        val view = rita.record(deal)
        eq(view.tags, listOf("vip"), "tags")
        eq(field(view, "value")?.text, "10.00", "value")
        // A sync round after it: the listener throws on a Rust worker thread; the round is fine.
        eq(sync(rita).peer, "hub", "the round's peer")
        eq(rita.status().pendingChanges, 0uL, "pending after the round")
    }
}

/** The rest of the surface: enrolChecked, the catalog, the async change feed, stopping a
 * listener, serving a LAN peer. */
fun surface(dir: File) = Hub(dir).use { hub ->
    val ritaCfg = config(dir, "rita-phone")
    val checked = runBlocking { enrolChecked(ritaCfg, Enrolment(hub.url, hub.token(2, "rita-phone"), null), ROUND) }
    eq(checked.firstRound?.peer, "hub", "enrolChecked's round")
    val rita = checked.device
    val (carl, _) = enrol(hub, dir, 3, "carl-laptop")
    sync(carl)

    val catalog = rita.catalog()
    check(catalog.loaded) { "the catalog is loaded after enrolChecked" }
    eq(catalog.users.map { it.id }, listOf(1uL, 2uL, 3uL), "catalog users")
    check(catalog.stages.any { it.id == 12uL }) { "stage 12 in ${catalog.stages}" }
    eq(rita.customField(RecordKind.DEAL, "Region")?.kind, CustomFieldKind.LIST, "Region's kind")
    eq(rita.customField(RecordKind.DEAL, "Nope"), null, "an unknown custom field")

    val feed = rita.changes()
    eq(runBlocking { feed.nextChanges(200u) }, emptyList(), "nothing changed within the wait")
    val seen = Recorder()
    val registration = rita.observe(seen)
    val deal = rita.createDeal(listOf(FieldInput("name", "Lead")))
    eq(runBlocking { withTimeout(10_000) { feed.nextChanges(5000u) } }, listOf(deal), "the feed's next changes")
    eq(feed.tryNextChanges(), emptyList(), "each change once")
    registration.stop()
    check(!registration.isActive()) { "stopped" }
    rita.tag(deal, "vip")
    eq(seen.batches.toList(), listOf(listOf(deal)), "a stopped listener is not told")
    eq(feed.tryNextChanges(), listOf(deal), "the feed is")
    raises<SellsyncException.Invalid>("nextChanges(0)") { runBlocking { feed.nextChanges(0u) } }

    // Rita serves her LAN; Carl gets her offline deal from her, not from the hub.
    val server = runBlocking { rita.serveLan("127.0.0.1:0") }
    eq(server.url(), "wss://127.0.0.1:${server.port()}/", "the server's url")
    val report = runBlocking { withTimeout(40_000) { carl.syncPeer(server.url(), "rita-phone", ROUND) } }
    check(deal in report.changed) { "carl's LAN round brings the deal: ${report.changed}" }
    eq(carl.deals().map { it.id }, listOf(deal), "carl's deals after the LAN round")
    runBlocking { withTimeout(20_000) { server.stop() } }
    raises<SellsyncException.Unreachable>("a LAN round after stop") {
        runBlocking { withTimeout(20_000) { carl.syncPeer(server.url(), "rita-phone", 5u) } }
    }
    server.close()
    feed.close()
    rita.close()
    carl.close()
}

fun main(args: Array<String>) {
    Thread {
        Thread.sleep(WATCHDOG_SECS * 1000)
        System.err.println("FAIL: the run took more than $WATCHDOG_SECS s")
        Runtime.getRuntime().halt(3)
    }.apply { isDaemon = true }.start()

    val tests = linkedMapOf<String, (File) -> Unit>(
        "two devices: conflict, resolve, observe, typed errors" to ::story,
        "a listener that throws does not break the device" to ::throwingListener,
        "enrolChecked, catalog, change feed, stopping a listener, LAN" to ::surface,
    )
    val only = args.toSet()
    val unknown = only - tests.keys
    if (unknown.isNotEmpty()) {
        println("FAIL: no test named $unknown; the tests: ${tests.keys}")
        exitProcess(2)
    }
    var failed = 0
    for ((name, test) in tests) {
        if (only.isNotEmpty() && name !in only) continue
        val dir = Files.createTempDirectory("sellsync-kotlin").toFile()
        val started = System.nanoTime()
        try {
            test(dir)
            println("ok   $name (${(System.nanoTime() - started) / 1_000_000} ms)")
            dir.deleteRecursively()
        } catch (e: Throwable) {
            failed += 1
            println("FAIL $name: $e (kept $dir)")
            e.printStackTrace()
        }
    }
    if (failed > 0) {
        println("$failed failed")
        exitProcess(1)
    }
    println("all passed")
    exitProcess(0)
}
