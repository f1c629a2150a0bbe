"""PII dev set: the TUNE templates of synthetic.py filled with faker values of 24 locales (for tuning only).

  python bench/pii_dev.py 600 LOCATION     # recall per type on 600 texts, then the LOCATION misses

The recognizers' multi-country forms (streets, postcodes, towns, phones) were developed on this
set and on faker's per-locale street_address() output: it shares the TUNE templates (never the
held-out SCORE ones, never the independent generator's frames), so reading its misses is allowed.
"""
import sys, re, random, collections; sys.path.insert(0, __import__("os").path.dirname(__file__) + "/..")
from faker import Faker
from tuneline.data.pii import synthetic, engine, fast, scoring
from tuneline.params import load_params
LOCS=["en_US","en_GB","en_IE","en_AU","en_NZ","en_CA","en_IN","de_DE","de_AT","fr_FR","fr_CH","es_ES","es_MX","it_IT","nl_NL","nl_BE","pt_BR","pt_PT","pl_PL","sv_SE","da_DK","fi_FI","cs_CZ","ro_RO"]
rng=random.Random(5)
docs=[]
for i in range(int(sys.argv[1]) if len(sys.argv)>1 else 600):
    f=Faker(LOCS[i%len(LOCS)]); f.seed_instance(900000+i)
    tmpl=synthetic.TEMPLATES['tune'][i%30]
    first,last=f.first_name(),f.last_name()
    vals={"first":first,"last":last,"name":f"{first} {last}","name2":f.name(),"lfirst":first.lower(),"lname":f"{first} {last}".lower(),
          "city":f.city().strip(),"city2":f.city().strip(),"street":" ".join(f.street_address().split()),"postcode":f.postcode().strip(),
          "order":str(rng.randint(10000,999999)),"order2":str(rng.randint(10000,999999)),"invoice":"INV-"+str(rng.randint(1000,99999)),
          "account":str(rng.randint(100000,9999999)),"phone":f.phone_number().strip(),"email":f.email()}
    text,spans,pos="",[],0
    for m in re.finditer(r"\{(\w+)\}",tmpl):
        text+=tmpl[pos:m.start()]; v=vals[m.group(1)]
        spans.append((len(text),len(text)+len(v),synthetic.KIND_OF[m.group(1)])); text+=v; pos=m.end()
    text+=tmpl[pos:]; docs.append((text,spans))
c=load_params('params.yaml').clean
an=engine.build_analyzer(c.spacy_model,id_patterns=c.id_patterns)
texts=[d[0] for d in docs]
out=fast.anonymize_batch(texts,an,entities=c.pii_entities,score_threshold=c.pii_score_threshold,n_process=1)
found=[[(x.start,x.end,x.entity_type) for x in r.found] for r in out]
s=scoring.score(texts,[d[1] for d in docs],found)
print({k:round(v,3) for k,v in s['recall'].items()}, 'P', round(s['precision']['ALL'],3))
want=sys.argv[2] if len(sys.argv)>2 else 'LOCATION'
n=0
for (t,g),f in zip(docs,found):
    for a,b,k in g:
        if k==want and not scoring.covered(t,(a,b,k),f):
            print(repr(t[a:b]),'||',t.replace('\n',' / ')[:150]); n+=1
    if n>40: break
print('FP', [t[a:b]+'/'+k for (t,g),fs in zip(docs,found) for a,b,k in fs if not any(a<ge and gs<b for gs,ge,_ in g)][:30])
