/*
 * page.c - the report page: one self-contained HTML file (no network, no external script) that
 * shows a pipeline as a graph of its stages (rate, threads, buffer, waits, CPU share), ferry's
 * verdict in words, and the timeline of a trace, so that the overlap of loading and training
 * can be seen (ferry_report_page_write).
 *
 * The report JSON (ferry_iterator_report_json) and the trace JSON (ferry_runtime_trace_write)
 * are embedded in <script type="application/json"> blocks that the browser does not run, with
 * every '<' written as \u003c (the same JSON: '<' cannot occur outside a string, and in one it
 * is that escape), so no text of theirs can end the block or open a comment that hides its end.
 * The page's own script parses them and draws with the DOM and SVG; a block that does not parse,
 * or is not shaped as expected, is shown as unreadable and the rest of the page still draws.
 */
#include "core.h"

#include <errno.h>
#include <string.h>

static const char *const page_head[] = {
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n",
    "<title>ferry report</title>\n<style>\n",
    "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}\n",
    "h1{font-size:20px;margin:0 0 8px}h2{font-size:16px;margin:24px 0 8px}\n",
    "#verdict{background:#fff;border-left:6px solid #c33;padding:10px 14px;max-width:1100px}\n",
    "#verdict.consumer{border-color:#3a3}#summary td{padding:2px 12px 2px 0}\n",
    ".stage{display:inline-block;vertical-align:top;background:#fff;border:2px solid #999;border-radius:6px;"
    "padding:6px 10px;margin:4px;min-width:150px}\n.stage.limit{border-color:#c33;box-shadow:0 0 0 3px #fcc}\n",
    ".stage b{font-size:15px}.stage div{font-size:12px;color:#444}.arrow{display:inline-block;margin:0 2px;"
    "font-size:22px;vertical-align:middle;color:#777}\n",
    "#timeline{background:#fff;border:1px solid #ccc}.legend span{display:inline-block;width:12px;height:12px;"
    "margin:0 4px 0 12px;vertical-align:middle}\n#tuning li.kept{color:#262}#tuning li.backed_out{color:#a33}\n"
    "</style></head>\n<body>\n<h1>ferry report</h1>\n",
    "<p id=\"verdict\">(no report)</p>\n<table id=\"summary\"></table>\n",
    "<h2>Pipeline (data flows left to right, into the consumer)</h2>\n<div id=\"graph\"></div>\n",
    "<h2>AUTOTUNE decisions</h2>\n<ol id=\"tuning\"></ol>\n",
    "<h2>Timeline</h2>\n<div class=\"legend\" id=\"legend\"></div>\n<div id=\"timeinfo\"></div>\n",
    "<svg id=\"timeline\" width=\"1200\" height=\"60\"></svg>\n",
    NULL,
};

static const char *const page_script[] = {
    "<script>\n",
    "'use strict';\n",
    "function data(id){const e=document.getElementById(id);if(!e||!e.textContent.trim())return null;"
    "try{return JSON.parse(e.textContent)}catch(x){return {error:String(x)}}}\n",
    "function el(tag,attrs,text){const e=document.createElement(tag);for(const k in "
    "attrs||{})e.setAttribute(k,attrs[k]);"
    "if(text!==undefined)e.textContent=text;return e}\n",
    "function svg(tag,attrs){const e=document.createElementNS('http://www.w3.org/2000/svg',tag);"
    "for(const k in attrs)e.setAttribute(k,attrs[k]);return e}\n",
    "function ms(ns){return (ns/1e6).toFixed(1)+' ms'}\n",
    "function num(x){return x>=100?Math.round(x).toLocaleString('en-US'):x.toFixed(2)}\n",
    "const R=data('report'),T=data('trace');\n",
    "if(R&&R.error){document.getElementById('verdict').textContent='The report could not be read: '+R.error}\n",
    "else if(R){try{\n",
    " const v=document.getElementById('verdict');v.textContent='Verdict ('+R.limit+'): '+R.verdict;"
    "v.className=R.limit;\n",
    " const s=document.getElementById('summary');\n",
    " const rows=[['elements handed out',R.elements],['seconds',R.seconds.toFixed(3)],"
    "['elements/s',num(R.elements_per_s)],['headspace (elements/s if the consumer took "
    "nothing)',num(R.headspace_per_s)],"
    "['bound with the cpu budget (elements/s)',num(R.bound_per_s)],['cpu budget',R.cpu_budget],"
    "['consumer waited',(100*R.consumer.wait_share).toFixed(1)+' % of the time'],"
    "['wait in next(): p50 / p99',(R.consumer.wait_p50_ns/1e3).toFixed(1)+' us / "
    "'+(R.consumer.wait_p99_ns/1e3).toFixed(1)+' us']];\n",
    " for(const r of rows){const "
    "tr=el('tr');tr.appendChild(el('td',{},r[0]));tr.appendChild(el('td',{'class':'value'},String(r[1])));s."
    "appendChild(tr)}\n",
    " const g=document.getElementById('graph');const st=R.stages.slice().reverse();\n",
    " st.forEach((x,i)=>{\n",
    "  const d=el('div',{'class':'stage'+(x.node===R.stage?' limit':''),'data-node':String(x.node)});\n",
    "  d.appendChild(el('b',{},x.name));if(x.op&&x.op!==x.name)d.appendChild(el('span',{},' ('+x.op+')'));\n",
    "  const rate=R.seconds>0?x.elements_out/R.seconds:0;\n",
    "  const lines=[num(rate)+' elements/s ('+x.elements_out+')',x.parallelism>0?x.parallelism+' "
    "thread'+(x.parallelism>1?'s':''):'inline',"
    "'buffer '+x.buffered_elements+' / '+x.buffer_capacity,'work '+ms(x.work_ns)+', rows '+ms(x.assemble_ns),"
    "'wait for input '+ms(x.wait_input_ns)+', for room '+ms(x.wait_consumer_ns)+(x.idle_full_ns>0?' (idle full "
    "'+ms(x.idle_full_ns)+')':'')];\n",
    "  if(x.thread_ns>0)lines.push('threads ran '+ms(x.thread_ns)+', CPU '+(100*x.cpu_ns/x.thread_ns).toFixed(0)+' "
    "%');\n",
    "  for(const l of lines)d.appendChild(el('div',{},l));\n",
    "  g.appendChild(d);g.appendChild(el('span',{'class':'arrow'},'\\u2192'));\n",
    " });\n",
    " const c=el('div',{'class':'stage'+(R.limit==='consumer'?' "
    "limit':''),'data-node':'consumer'});c.appendChild(el('b',{},'consumer'));"
    "c.appendChild(el('div',{},'waited '+(100*R.consumer.wait_share).toFixed(1)+' %'));g.appendChild(c);\n",
    " const tl=document.getElementById('tuning');\n",
    " if(R.autotune&&R.autotune.length){for(const d of R.autotune){const li=el('li',{'class':d.outcome},"
    "d.at_s.toFixed(2)+' s, '+d.outcome.replace('_',' ')+': '+d.why+' ('+num(d.rate_before)+' \\u2192 "
    "'+num(d.rate_after)+' elements/s)');"
    "tl.appendChild(li)}}else{tl.appendChild(el('li',{},'no stage was given FERRY_AUTOTUNE'))}\n",
    "}catch(x){document.getElementById('verdict').textContent='The report could not be read: '+x}}\n",
    "const colors={run:'#cfd8e3',work:'#3b7dd8',assemble:'#7b5bd6',lock:'#d88a3b','lock wait':'#d88a3b',"
    "'wait for input':'#e0c050','wait for room':'#aaa',next:'#e04040',step:'#3aa655'};\n",
    "const lg=document.getElementById('legend');for(const k of ['run','work','wait for input','wait for room','lock "
    "wait','next','step']){"
    "lg.appendChild(el('span',{style:'background:'+colors[k]}));lg.appendChild(document.createTextNode(k))}\n",
    "if(T&&T.error){document.getElementById('timeinfo').textContent='The trace could not be read: '+T.error}\n",
    "else if(T&&T.traceEvents){try{\n",
    " const ev=T.traceEvents.filter(e=>e.ph==='X');const names={};\n",
    " for(const e of T.traceEvents)if(e.ph==='M'&&e.name==='thread_name')names[e.tid]=e.args.name;\n",
    " const tids=[...new Set(ev.map(e=>e.tid))].sort((a,b)=>a-b);\n",
    " let t1=0;for(const e of ev)t1=Math.max(t1,e.ts+e.dur);\n",
    " const "
    "W=1200,L=150,H=26,sv=document.getElementById('timeline');sv.setAttribute('height',String(20+H*tids.length));\n",
    " const x=t=>L+(W-L-10)*(t1>0?t/t1:0);\n",
    " tids.forEach((tid,i)=>{const y=10+i*H;const "
    "lab=svg('text',{x:'4',y:String(y+16),'font-size':'12','class':'thread'});"
    "lab.textContent=names[tid]||('thread '+tid);sv.appendChild(lab);"
    "sv.appendChild(svg('line',{x1:String(L),x2:String(W-10),y1:String(y+H-2),y2:String(y+H-2),stroke:'#eee'}))});\n",
    " const sorted=ev.slice().sort((a,b)=>(a.cat==='run'?0:1)-(b.cat==='run'?0:1));\n",
    " for(const e of sorted){const i=tids.indexOf(e.tid);const y=10+i*H+(e.cat==='run'?0:4);"
    "const r=svg('rect',{x:String(x(e.ts)),y:String(y),width:String(Math.max(0.5,x(e.ts+e.dur)-x(e.ts))),"
    "height:String(e.cat==='run'?H-4:H-12),fill:colors[e.cat]||'#888','class':'span'});"
    "const ti=svg('title',{});ti.textContent=e.name+': '+(e.dur/1e3).toFixed(3)+' ms at '+(e.ts/1e3).toFixed(3)+' ms';"
    "r.appendChild(ti);sv.appendChild(r)}\n",
    " document.getElementById('timeinfo').textContent=ev.length+' spans on '+tids.length+' threads over "
    "'+(t1/1e3).toFixed(1)+' ms'"
    "+(T.otherData&&T.otherData.dropped?' ('+T.otherData.dropped+' older spans dropped)':'');\n",
    "}catch(x){document.getElementById('timeinfo').textContent='The trace could not be read: '+x}}\n",
    "else{document.getElementById('timeinfo').textContent='No trace: run with FERRY_TRACE=file or "
    "ferry_runtime_options.trace_bytes.'}\n",
    "</script>\n</body></html>\n",
    NULL,
};

/* Writes json into a script block, every '<' as \u003c. */
static void w_block(ferry__writer *w, const char *id, const char *json, size_t n) {
    ferry__w_printf(w, "<script type=\"application/json\" id=\"%s\">", id);
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        if (json[i] == '<') {
            ferry__w_bytes(w, json + from, i - from);
            ferry__w_bytes(w, "\\u003c", 6);
            from = i + 1;
        }
    }
    if (n > from) ferry__w_bytes(w, json + from, n - from);
    ferry__w_printf(w, "</script>\n");
}

int ferry_report_page_write(ferry_runtime *rt, const char *report_json, size_t report_len, const char *trace_json,
                            size_t trace_len, const char *path) {
    FERRY__CHECK_ARG(rt != NULL, FERRY_EINVAL, "%s: argument 'rt' is NULL", __func__);
    FERRY__CHECK_ARG(report_json != NULL, FERRY_EINVAL, "%s: argument 'report_json' is NULL", __func__);
    FERRY__CHECK_ARG(trace_json != NULL || trace_len == 0, FERRY_EINVAL,
                     "%s: argument 'trace_json' is NULL with trace_len %zu", __func__, trace_len);
    FERRY__CHECK_ARG(path != NULL && path[0] != '\0', FERRY_EINVAL, "%s: argument 'path' is NULL or empty", __func__);
    ferry__writer w;
    ferry__writer_init(&w, &rt->alloc);
    for (const char *const *p = page_head; *p; p++) ferry__w_bytes(&w, *p, strlen(*p));
    w_block(&w, "report", report_json, report_len);
    w_block(&w, "trace", trace_json ? trace_json : "", trace_len);
    for (const char *const *p = page_script; *p; p++) ferry__w_bytes(&w, *p, strlen(*p));
    if (w.failed) {
        ferry__writer_fini(&w);
        return ferry__set_last_error(FERRY_ENOMEM, "%s: out of memory for the page", __func__);
    }
    const char *step = "";
    int err = ferry__file_write_atomic(path, w.data, w.size, &step);
    ferry__writer_fini(&w);
    if (err) return ferry__set_last_error(FERRY_EIO, "%s: %s: %s failed: %s", __func__, path, step, strerror(err));
    return FERRY_OK;
}
